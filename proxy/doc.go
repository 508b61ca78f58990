// Package proxy is the protocol-neutral pipeline every protocol engine calls:
//
//	client ──token──▶ engine ──▶ Pipeline.Open      authenticate (proxy/identity), record session_start
//	                         ──▶ Session.Authorize  decide (policies), record the command BEFORE forwarding
//	                         ──▶ forward to the target with regate-held credentials (engine)
//	target ──response──▶ engine ──▶ Command.Done   record the outcome
//	                         ──▶ Session.Close      record session_end
//
// Engines (proxy/postgres, and later ssh, kubernetes, http) own the wire
// protocol and render refusals natively; everything about identity, policy and
// recording lives here, so a new engine never touches another one. Every step
// fails closed: an authentication error, an undefined or failing decision, or a
// store that cannot write all refuse the request.
package proxy
