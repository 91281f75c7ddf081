"""A client that sends application data before its Finished.

Everything up to the client's Finished is correct (certificate,
CertificateVerify, and in TLS 1.2 the ChangeCipherSpec); then, under the
keys the Finished would use, an HTTP request goes out first. The handshake is
not complete, so the gateway must not take the request: it must refuse with
unexpected_message, log it, and the request must never reach a backend.
"""

from tlslite.messages import ApplicationData, Finished

import tlsconf

EARLY_REQUEST = b"GET /before-finished HTTP/1.1\r\nHost: localhost\r\n\r\n"


def tamper(conn, msg):
    if isinstance(msg, Finished):
        return [ApplicationData().create(bytearray(EARLY_REQUEST))]
    return []


def main():
    args = tlsconf.arguments(__doc__.splitlines()[0])
    tlsconf.refused_handshake(args, "app_data_before_finished", tamper)


if __name__ == "__main__":
    main()
