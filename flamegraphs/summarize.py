#!/usr/bin/env python3
"""Share of gateway CPU samples by where the time goes, from a folded-stack file."""
import sys
from collections import Counter

CATEGORIES = [  # first match wins, checked from the leaf up
    ("crypto: aws-lc (AES-GCM, ECDSA, X25519, SHA)", ("aws_lc", "aes_gcm", "aes_hw", "gcm_", "ecp_nistz", "sha256", "sha512", "x25519", "p256", "p384", "bn_", "ec_")),
    ("rustls (handshake/record layer)", ("rustls::",)),
    ("webpki (client certificate verification)", ("webpki::",)),
    ("HTTP parse/build (httparse, our codec)", ("httparse", "portcullis::http::")),
    ("proxy logic (portcullis)", ("portcullis::",)),
    ("monoio runtime / io_uring submission", ("monoio::", "io_uring")),
    ("allocator (mimalloc)", ("mi_", "mimalloc")),
    ("memcpy/memmove", ("memmove", "memcpy")),
    ("kernel: TCP/IP + loopback", ("tcp_", "ip_", "__dev_queue", "net_rx", "loopback", "__netif", "skb", "inet_", "sock_", "__sys_", "sk_")),
    ("kernel: io_uring", ("io_uring", "io_issue", "io_submit", "io_wq", "io_")),
    ("kernel: scheduler/irq/other", ("",)),
]


def main(path):
    total, counts = 0, Counter()
    for line in open(path):
        stack, _, n = line.rstrip().rpartition(" ")
        n = int(n)
        total += n
        frames = stack.split(";")[::-1]
        for name, keys in CATEGORIES:
            if any(any(k in f for k in keys) for f in frames[:1]) or (name.startswith(("crypto", "rustls", "webpki", "HTTP", "proxy", "monoio", "allocator", "memcpy")) and any(any(k in f for k in keys) for f in frames[:3])):
                counts[name] += n
                break
    for name, n in counts.most_common():
        print(f"{100 * n / total:5.1f}%  {name}")


main(sys.argv[1])
