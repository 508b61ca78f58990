package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/regate/regate/proxy"
)

// startup parameters regate sets itself or never forwards.
var reservedParams = map[string]bool{"user": true, "database": true, "replication": true}

// upstreamConfig is the connection configuration regate logs in to the
// target's database with.
func (s *Server) upstreamConfig(database string, runtime map[string]string) (*pgconn.Config, error) {
	cfg := s.cfg
	host, portStr, err := net.SplitHostPort(cfg.Upstream)
	if err != nil {
		return nil, fmt.Errorf("target %q has an invalid upstream address %q: %w", cfg.Target.Name, cfg.Upstream, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("target %q has an invalid upstream port %q", cfg.Target.Name, portStr)
	}
	pc, err := pgconn.ParseConfig("sslmode=disable")
	if err != nil {
		return nil, fmt.Errorf("cannot build the target connection config: %w", err)
	}
	pc.Host, pc.Port = host, uint16(port)
	pc.User, pc.Password, pc.Database = cfg.Credentials.User, cfg.Credentials.Password, database
	pc.TLSConfig, pc.Fallbacks = cfg.UpstreamTLS, nil
	pc.ConnectTimeout = 10 * time.Second
	pc.RuntimeParams = runtime
	return pc, nil
}

// connectUpstream logs in to the target with regate's credentials, forwarding
// the client's other startup parameters (application_name, options, …).
func (cn *conn) connectUpstream(ctx context.Context, clientParams map[string]string) error {
	runtime := map[string]string{}
	for k, v := range clientParams {
		if !reservedParams[k] {
			runtime[k] = v
		}
	}
	pc, err := cn.s.upstreamConfig(cn.database, runtime)
	if err != nil {
		return err
	}
	pg, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		return fmt.Errorf("cannot connect to target %q: %s", cn.s.cfg.Target.Name, upstreamError(err))
	}
	// Hijack needs an idle connection with no background reader left running
	// (pgconn may start one under load), or it would eat the first answer.
	if err := pg.SyncConn(ctx); err != nil {
		pg.Close(ctx)
		return fmt.Errorf("cannot take over the target connection: %w", err)
	}
	hc, err := pg.Hijack()
	if err != nil {
		pg.Close(ctx)
		return fmt.Errorf("cannot take over the target connection: %w", err)
	}
	cn.up = proxy.RawTCP(hc.Conn)
	cn.pid = hc.PID
	cn.upSecret = hc.SecretKey
	cn.params = hc.ParameterStatuses
	cn.txStatus = hc.TxStatus
	if cn.txStatus == 0 {
		cn.txStatus = 'I'
	}
	cn.initUpstream()
	return nil
}

// upstreamError returns the server's message for a PgError, or the error text.
// pgconn never puts the password in its errors.
func upstreamError(err error) string {
	if pe, ok := pgconnError(err); ok {
		return fmt.Sprintf("%s (SQLSTATE %s)", pe.Message, pe.Code)
	}
	return err.Error()
}

func pgconnError(err error) (*pgconn.PgError, bool) {
	var pe *pgconn.PgError
	return pe, errors.As(err, &pe)
}
