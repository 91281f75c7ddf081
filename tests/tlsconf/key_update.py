"""A TLS 1.3 client that updates its keys mid-connection and asks the
gateway to update its own (KeyUpdate, update_requested).

Requests before and after must both be served: the gateway must accept
records under the client's new key and answer under its new key (tlslite
follows the gateway's KeyUpdate reply when it reads).
"""

from tlslite.constants import KeyUpdateMessageType

import tlsconf


def main():
    args = tlsconf.arguments(__doc__.splitlines()[0], versions=("1.3",))
    outcome = tlsconf.Outcome("key_update", args.tls)
    chain, key = tlsconf.load_identity(args.cert, args.key)
    conn = tlsconf.connect(args)
    if tlsconf.handshake(conn, args, outcome, chain, key) and tlsconf.request(
        conn, outcome, "/before-key-update", keep_alive=True
    ):
        for _ in conn.send_keyupdate_request(KeyUpdateMessageType.update_requested):
            pass
        tlsconf.request(conn, outcome, "/after-key-update", key="http_status_after_key_update")
    outcome.print()


if __name__ == "__main__":
    main()
