/* tests/ktls/smoke.c - proves that the kernel's TLS offload (kTLS) works in
 * the test VM, without the gateway: a loopback TCP pair is switched to the
 * "tls" upper-layer protocol, given a fixed dummy AES-128-GCM key (TLS 1.3),
 * and "hello" goes from one end to the other and back through the kernel's
 * record layer. A second pair checks that what crosses the wire really is a
 * TLS record and not the plaintext. Finally /proc/net/tls_stat must count the
 * software kTLS sessions.
 *
 * Build: gcc -static -O2 -Wall -o target/ktls-vm/smoke tests/ktls/smoke.c
 * Run:   tests/ktls/vm.sh target/ktls-vm/smoke -- ./smoke
 * Prints one PASS/FAIL line per check and exits 0 if all passed, 1 if not.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

static int failed;

static void result(int ok, const char *fmt, ...)
{
    va_list ap;
    printf("%s ", ok ? "PASS" : "FAIL");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
    if (!ok)
        failed = 1;
}

/* A failed system call ends the test: nothing after it would mean anything. */
static void must(int ok, const char *what)
{
    if (ok)
        return;
    printf("FAIL %s: %s (errno %d)\n", what, strerror(errno), errno);
    printf("FAIL smoke\n");
    exit(1);
}

/* Two connected TCP sockets on 127.0.0.1, with a 10 s receive timeout each so
 * that a kernel which swallows a record cannot hang the VM. */
static void loopback_pair(int *a, int *b)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    struct timeval tv = { .tv_sec = 10 };
    int on = 1;
    int lst = socket(AF_INET, SOCK_STREAM, 0);

    must(lst >= 0, "socket");
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    must(bind(lst, (struct sockaddr *)&addr, sizeof addr) == 0, "bind 127.0.0.1:0");
    must(listen(lst, 1) == 0, "listen");
    must(getsockname(lst, (struct sockaddr *)&addr, &len) == 0, "getsockname");
    *a = socket(AF_INET, SOCK_STREAM, 0);
    must(*a >= 0, "socket");
    must(connect(*a, (struct sockaddr *)&addr, sizeof addr) == 0, "connect");
    *b = accept(lst, NULL, NULL);
    must(*b >= 0, "accept");
    close(lst);
    for (int i = 0; i < 2; i++) {
        int fd = i ? *b : *a;
        must(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) == 0, "TCP_NODELAY");
        must(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0, "SO_RCVTIMEO");
    }
}

static void attach_tls(int fd)
{
    must(setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof "tls") == 0,
         "setsockopt(TCP_ULP, \"tls\")");
}

/* Install a dummy TLS 1.3 AES-128-GCM key for one direction (TLS_TX or
 * TLS_RX). `seed` varies the key so both directions do not share one. */
static void install_key(int fd, int direction, unsigned char seed)
{
    struct tls12_crypto_info_aes_gcm_128 ci;

    memset(&ci, 0, sizeof ci);
    ci.info.version = TLS_1_3_VERSION;
    ci.info.cipher_type = TLS_CIPHER_AES_GCM_128;
    for (int i = 0; i < TLS_CIPHER_AES_GCM_128_KEY_SIZE; i++)
        ci.key[i] = (unsigned char)(seed + i);
    for (int i = 0; i < TLS_CIPHER_AES_GCM_128_IV_SIZE; i++)
        ci.iv[i] = (unsigned char)(0xa0 + i);
    for (int i = 0; i < TLS_CIPHER_AES_GCM_128_SALT_SIZE; i++)
        ci.salt[i] = (unsigned char)(0x50 + i);
    /* rec_seq stays zero: the first record of a fresh key */
    must(setsockopt(fd, SOL_TLS, direction, &ci, sizeof ci) == 0,
         direction == TLS_TX ? "setsockopt(SOL_TLS, TLS_TX)" : "setsockopt(SOL_TLS, TLS_RX)");
}

/* Read exactly n bytes (TCP may split them). Returns bytes read. */
static size_t read_full(int fd, void *buf, size_t n)
{
    size_t got = 0;

    while (got < n) {
        ssize_t r = recv(fd, (char *)buf + got, n - got, 0);
        if (r <= 0) {
            if (r < 0)
                printf("     recv: %s (errno %d)\n", strerror(errno), errno);
            break;
        }
        got += (size_t)r;
    }
    return got;
}

static int send_all(int fd, const void *buf, size_t n)
{
    return send(fd, buf, n, 0) == (ssize_t)n;
}

/* Value of one counter in /proc/net/tls_stat, -1 if it is not there. Also
 * echoes the file so the VM log shows it. */
static long tls_stat(const char *name)
{
    char line[256], key[128];
    long val, found = -1;
    FILE *f = fopen("/proc/net/tls_stat", "r");

    if (!f) {
        printf("     /proc/net/tls_stat: %s\n", strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%127s %ld", key, &val) == 2 && strcmp(key, name) == 0)
            found = val;
    }
    fclose(f);
    return found;
}

static void show_tls_stat(void)
{
    char line[256];
    FILE *f = fopen("/proc/net/tls_stat", "r");

    if (!f)
        return;
    while (fgets(line, sizeof line, f))
        printf("     tls_stat: %s", line);
    fclose(f);
}

int main(void)
{
    static const char msg[] = "hello";
    const size_t n = sizeof msg - 1;
    char buf[64];
    int a, b, c, d;

    /* 1. round trip: a --TLS--> b, then b --TLS--> a */
    loopback_pair(&a, &b);
    attach_tls(a);
    attach_tls(b);
    result(1, "TCP_ULP \"tls\" accepted on both ends of a loopback pair");
    install_key(a, TLS_TX, 0x10);
    install_key(b, TLS_RX, 0x10);
    install_key(b, TLS_TX, 0x40);
    install_key(a, TLS_RX, 0x40);
    result(1, "TLS_TX/TLS_RX with AES-128-GCM, TLS 1.3 installed on both ends");

    must(send_all(a, msg, n), "send a->b");
    memset(buf, 0, sizeof buf);
    size_t got = read_full(b, buf, n);
    result(got == n && memcmp(buf, msg, n) == 0, "a->b through kTLS: got \"%.*s\"", (int)got, buf);

    must(send_all(b, buf, got), "send b->a");
    memset(buf, 0, sizeof buf);
    got = read_full(a, buf, n);
    result(got == n && memcmp(buf, msg, n) == 0, "b->a echoed back through kTLS: got \"%.*s\"", (int)got, buf);

    /* 2. on the wire: c encrypts, d reads raw TCP. A TLS 1.3 record is a
     * 5-byte header (type 23 application_data, legacy version 3.3, length)
     * then ciphertext of plaintext + 1 content-type byte + 16-byte tag. */
    loopback_pair(&c, &d);
    attach_tls(c);
    install_key(c, TLS_TX, 0x70);
    must(send_all(c, msg, n), "send c->d");
    unsigned char rec[5 + 5 + 1 + 16];
    got = read_full(d, rec, sizeof rec);
    unsigned len = got >= 5 ? (unsigned)(rec[3] << 8 | rec[4]) : 0;
    result(got == sizeof rec && rec[0] == 23 && rec[1] == 3 && rec[2] == 3 && len == n + 1 + 16,
           "wire carries one TLS 1.3 record (%zu bytes, type %d, length %u)",
           got, got ? rec[0] : -1, len);
    result(memmem(rec, got, msg, n) == NULL, "record payload is not the plaintext");

    /* 3. the kernel counted software kTLS sessions: 3 TX (a, b, c), 2 RX */
    show_tls_stat();
    long tx = tls_stat("TlsTxSw"), rx = tls_stat("TlsRxSw"), bad = tls_stat("TlsDecryptError");
    result(tx >= 1, "TlsTxSw = %ld (>= 1)", tx);
    result(rx >= 1, "TlsRxSw = %ld (>= 1)", rx);
    result(bad == 0, "TlsDecryptError = %ld (0)", bad);

    close(a);
    close(b);
    close(c);
    close(d);
    printf("%s smoke\n", failed ? "FAIL" : "PASS");
    return failed;
}
