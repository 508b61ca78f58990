package approval

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Webhook is one notification target.
type Webhook struct {
	URL string
	// Format is "json" (the request as JSON, the default) or "slack" (a Slack
	// incoming-webhook message).
	Format string
}

// Notifier posts new requests to webhooks, retrying failures, in the
// background: it never holds up a command. Delivery failures are logged.
type Notifier struct {
	Hooks   []Webhook
	Client  *http.Client // nil: 5 s timeout
	Retries int          // attempts per hook; 3 when zero
	Backoff time.Duration
	Logger  hclog.Logger
}

// Notify delivers r to every hook; it is meant for Config.Notify.
func (n *Notifier) Notify(r Request) {
	for _, h := range n.Hooks {
		go n.deliver(h, r)
	}
}

func (n *Notifier) deliver(h Webhook, r Request) {
	log := n.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	body, err := payload(h.Format, r)
	if err != nil {
		log.Error("cannot build an approval notification", "approval_id", r.ID, "error", err)
		return
	}
	client := n.Client
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	tries, wait := n.Retries, n.Backoff
	if tries <= 0 {
		tries = 3
	}
	if wait <= 0 {
		wait = time.Second
	}
	for i := 1; ; i++ {
		err = post(client, h.URL, body)
		if err == nil {
			log.Debug("approval notification delivered", "approval_id", r.ID, "url", redact(h.URL))
			return
		}
		if i >= tries {
			log.Error("approval notification failed", "approval_id", r.ID, "url", redact(h.URL),
				"attempts", i, "error", err)
			return
		}
		time.Sleep(wait)
		wait *= 2
	}
}

func post(c *http.Client, url string, body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

// payload renders a notification: the generic JSON event or a Slack message.
func payload(format string, r Request) ([]byte, error) {
	switch format {
	case "", "json":
		return json.Marshal(map[string]any{
			"type": "approval_requested", "approval": r,
			"approve": "regate approve " + r.ID, "deny": "regate deny " + r.ID + " --reason '…'",
		})
	case "slack":
		text := fmt.Sprintf("*regate*: %s asks to run on `%s`:\n```%s```\n%s\nApprovers: %s — `regate approve %s` or `regate deny %s --reason …` (expires %s)",
			r.Requester.Subject, r.Target, r.Command, r.Reason, strings.Join(r.Groups, ", "),
			r.ID, r.ID, r.ExpiresAt.Format(time.RFC3339))
		return json.Marshal(map[string]string{"text": text})
	}
	return nil, fmt.Errorf("unknown notification format %q (json or slack)", format)
}

// redact drops the path and query of a webhook URL, which often hold secrets.
func redact(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		if j := strings.IndexByte(u[i+3:], '/'); j >= 0 {
			return u[:i+3+j] + "/…"
		}
	}
	return u
}
