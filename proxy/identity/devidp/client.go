package devidp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// RequestToken asks the development issuer at issuer for a token (POST
// issuer + "/token") and returns its access token. Empty aud and zero ttl
// leave the issuer's defaults ("regate", 1 h).
func RequestToken(ctx context.Context, issuer, sub string, groups []string, email, aud string, ttl time.Duration) (string, error) {
	body := map[string]any{"sub": sub, "groups": cleanGroups(groups)}
	if email != "" {
		body["email"] = email
	}
	if aud != "" {
		body["aud"] = aud
	}
	if ttl != 0 {
		body["ttl"] = ttl.String()
	}
	b, err := json.Marshal(body)
	if err != nil {
		return "", fmt.Errorf("devidp: encode token request: %w", err)
	}
	url := strings.TrimSuffix(issuer, "/") + "/token"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return "", fmt.Errorf("devidp: token request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return "", fmt.Errorf("devidp: token request to %s: %w", url, err)
	}
	defer resp.Body.Close()
	return decodeTokenResponse(resp, url)
}

func decodeTokenResponse(resp *http.Response, url string) (string, error) {
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("devidp: read token response from %s: %w", url, err)
	}
	var out struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	jsonErr := json.Unmarshal(raw, &out)
	if resp.StatusCode != http.StatusOK {
		if jsonErr == nil && out.Error != "" {
			return "", fmt.Errorf("devidp: %s refused the token request: %s: %s", url, out.Error, out.Description)
		}
		return "", fmt.Errorf("devidp: %s answered %s", url, resp.Status)
	}
	if jsonErr != nil {
		return "", fmt.Errorf("devidp: decode token response from %s: %w", url, jsonErr)
	}
	if out.AccessToken == "" {
		return "", fmt.Errorf("devidp: %s answered without an access_token", url)
	}
	return out.AccessToken, nil
}
