"""A client whose record after the handshake does not authenticate.

After a complete mTLS handshake and one served request, the client sends an
application-data record whose ciphertext has one bit flipped. The gateway
must answer with exactly one fatal bad_record_mac alert and close (no
close_notify after it, no second alert), log the failure, and keep serving
other connections.
"""

import tlsconf


def main():
    args = tlsconf.arguments(__doc__.splitlines()[0])
    outcome = tlsconf.Outcome("corrupted_record", args.tls)
    chain, key = tlsconf.load_identity(args.cert, args.key)
    conn = tlsconf.connect(args)
    if tlsconf.handshake(conn, args, outcome, chain, key) and tlsconf.request(
        conn, outcome, "/before-corruption", keep_alive=True
    ):
        tlsconf.send_corrupted_record(conn, b"GET /corrupted HTTP/1.1\r\nHost: localhost\r\n\r\n")
        outcome["records_after"] = tlsconf.records_until_close(conn)
    outcome.print()


if __name__ == "__main__":
    main()
