// Package approval is the protocol-neutral approval broker: when a policy
// decision asks for a human approval, the request waits here until a member of
// one of the approver groups (never the requester) approves or denies it, or
// until it times out.
//
//	engine ─▶ Broker.Reuse       an earlier approval of the same request, unused and in time? let it through once
//	       ─▶ Broker.Ask         store a pending Request (shared store: several gateways see it), notify
//	       ─▶ Broker.Wait        until approved / denied / the wait ends (the request stays pending until its TTL)
//	admin  ─▶ Broker.Approve / Deny   (compare-and-set in the store, so one decision wins)
//
// States: pending → approved | denied | expired. An approval that comes after
// the wait ended lets the same requester re-run the same command (same
// identity, target and normalised command) exactly once within the TTL.
package approval
