/*
 * pcl_mtls_preload: an LD_PRELOAD library that makes an OpenSSL-based client
 * (wrk, h2load, anything that builds its TLS context with SSL_CTX_new)
 * present a client certificate, so it can load-test a listener that requires
 * mutual TLS. Neither wrk nor h2load has a certificate option.
 *
 * How: it defines SSL_CTX_new and SSL_CTX_new_ex. The dynamic linker binds
 * the program's calls to these (a preloaded object comes first in the lookup
 * order); each calls the real function (dlsym RTLD_NEXT), then loads the
 * certificate chain and key named by the environment into the new context,
 * once per context, not per connection, so a load test does not parse PEM
 * files on every handshake:
 *
 *   PCL_CLIENT_CERT           PEM: the client certificate, optionally followed
 *                             by its intermediates (required)
 *   PCL_CLIENT_KEY            PEM: its private key (required)
 *   PCL_CLIENT_CHAIN          PEM: more intermediates (optional)
 *   PCL_CLIENT_KEY_PASSWORD   passphrase of an encrypted key (optional; without
 *                             it an encrypted key is an error, never a prompt)
 *   PCL_PRELOAD_QUIET=1       no "loaded" line on stderr
 *
 * It never lets a program run without the certificate: a missing variable, a
 * file that does not load, a key that does not match, or a program whose
 * SSL_CTX_new does not come from the OpenSSL this library was built against
 * prints one line to stderr naming the problem and exits with status 70
 * (EX_SOFTWARE), before any connection is made.
 *
 * Built by `make -C bench/mtls-preload` (gcc, libssl-dev); see README.md.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define PREFIX "pcl-mtls-preload: "
#define EXIT_STATUS 70

/* Set while one of our hooks runs, so that when OpenSSL's own SSL_CTX_new
 * calls SSL_CTX_new_ex through the PLT (and reaches our hook again) the
 * certificate is loaded once, by the outer hook. Per thread: two threads may
 * build contexts at once. */
static __thread int in_hook;
/* Whether the "loaded" line was printed (once per process is enough to show
 * the hook took effect; a race prints it twice at worst). */
static int announced;
/* Set when OpenSSL asked for a passphrase and the environment had none. */
static int password_missing;

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

static void die(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* OpenSSL's reasons, as queued (the system error first, e.g. "No such
     * file or directory", then what each layer made of it). */
    char reason[512] = "";
    char last[128] = "";
    size_t used = 0;
    unsigned long e;
    while ((e = ERR_get_error()) != 0 && used + 1 < sizeof reason) {
        const char *r = ERR_SYSTEM_ERROR(e) ? strerror(ERR_GET_REASON(e)) : ERR_reason_error_string(e);
        char code[32];
        if (r == NULL) {
            snprintf(code, sizeof code, "error %lx", e);
            r = code;
        }
        /* Layers often repeat the reason below them. */
        if (strcmp(r, last) == 0)
            continue;
        snprintf(last, sizeof last, "%s", r);
        int n = snprintf(reason + used, sizeof reason - used, "%s%s", used ? " / " : "", r);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    fprintf(stderr, PREFIX "%s%s%s; refusing to run without the client certificate\n", msg,
            reason[0] ? ": " : "", reason);
    fflush(stderr);
    /* _exit, not exit: the caller is inside OpenSSL; atexit handlers and
     * stdio of a half-initialised program are not ours to run. */
    _exit(EXIT_STATUS);
}

static const char *required_env(const char *name) {
    const char *v = getenv(name);
    if (v == NULL || v[0] == '\0')
        die("%s is not set (LD_PRELOAD names this library, so the client certificate must be "
            "given: PCL_CLIENT_CERT and PCL_CLIENT_KEY)",
            name);
    return v;
}

/* Passphrase callback: the environment's password, never a terminal prompt
 * (a load generator stopped at a prompt looks like a hung server). */
static int password_cb(char *buf, int size, int rwflag, void *userdata) {
    (void)rwflag;
    (void)userdata;
    const char *pw = getenv("PCL_CLIENT_KEY_PASSWORD");
    if (pw == NULL) {
        password_missing = 1;
        return -1;
    }
    size_t n = strlen(pw);
    if (n > (size_t)size)
        return -1;
    memcpy(buf, pw, n);
    return (int)n;
}

/* Extra intermediates from PCL_CLIENT_CHAIN, appended to the context's chain. */
static void add_chain(SSL_CTX *ctx, const char *path) {
    BIO *bio = BIO_new_file(path, "r");
    if (bio == NULL)
        die("cannot open PCL_CLIENT_CHAIN=%s", path);
    int n = 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        /* add0: the context owns x from here. */
        if (!SSL_CTX_add0_chain_cert(ctx, x)) {
            X509_free(x);
            BIO_free(bio);
            die("cannot add certificate %d of PCL_CLIENT_CHAIN=%s to the chain", n + 1, path);
        }
        n++;
    }
    BIO_free(bio);
    /* The loop ends on "no start line" after the last certificate; anything
     * else (a corrupt PEM block) is an error. */
    unsigned long e = ERR_peek_last_error();
    if (n == 0 || (e != 0 && ERR_GET_REASON(e) != PEM_R_NO_START_LINE))
        die("PCL_CLIENT_CHAIN=%s holds no readable PEM certificate", path);
    ERR_clear_error();
}

static void load_identity(SSL_CTX *ctx) {
    const char *cert = required_env("PCL_CLIENT_CERT");
    const char *key = required_env("PCL_CLIENT_KEY");
    const char *chain = getenv("PCL_CLIENT_CHAIN");

    SSL_CTX_set_default_passwd_cb(ctx, password_cb);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
        die("cannot load PCL_CLIENT_CERT=%s", cert);
    if (chain != NULL && chain[0] != '\0')
        add_chain(ctx, chain);
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        die("cannot load PCL_CLIENT_KEY=%s%s", key,
            password_missing ? " (it is encrypted: set PCL_CLIENT_KEY_PASSWORD)" : "");
    if (SSL_CTX_check_private_key(ctx) != 1)
        die("PCL_CLIENT_KEY=%s is not the key of PCL_CLIENT_CERT=%s", key, cert);
    SSL_CTX_set_default_passwd_cb(ctx, NULL);

    if (!announced) {
        announced = 1;
        const char *quiet = getenv("PCL_PRELOAD_QUIET");
        if (quiet == NULL || strcmp(quiet, "1") != 0) {
            fprintf(stderr, PREFIX "client certificate %s (key %s%s%s) loaded into the TLS context\n",
                    cert, key, chain ? ", chain " : "", chain ? chain : "");
        }
    }
}

/* The real function `name`, which must live in the same shared object as the
 * OpenSSL this library was linked against: a program linked with another
 * OpenSSL (say libssl.so.1.1) would otherwise get a context from one library
 * and our certificate calls from another. */
static void *next_symbol(const char *name) {
    void *real = dlsym(RTLD_NEXT, name);
    if (real == NULL)
        die("%s not found after this library in the lookup order (%s)", name, dlerror());
    Dl_info theirs, ours;
    if (dladdr(real, &theirs) == 0 || dladdr((void *)&SSL_CTX_use_certificate_chain_file, &ours) == 0)
        die("cannot tell which library provides %s", name);
    if (theirs.dli_fbase != ours.dli_fbase)
        die("the program's %s comes from %s but this library was built against %s: rebuild it "
            "against the program's OpenSSL",
            name, theirs.dli_fname ? theirs.dli_fname : "?", ours.dli_fname ? ours.dli_fname : "?");
    return real;
}

SSL_CTX *SSL_CTX_new(const SSL_METHOD *method) {
    static SSL_CTX *(*real)(const SSL_METHOD *);
    if (real == NULL)
        real = (SSL_CTX * (*)(const SSL_METHOD *)) next_symbol("SSL_CTX_new");
    if (in_hook)
        return real(method);
    in_hook = 1;
    SSL_CTX *ctx = real(method);
    if (ctx != NULL)
        load_identity(ctx);
    in_hook = 0;
    return ctx;
}

SSL_CTX *SSL_CTX_new_ex(OSSL_LIB_CTX *libctx, const char *propq, const SSL_METHOD *method) {
    static SSL_CTX *(*real)(OSSL_LIB_CTX *, const char *, const SSL_METHOD *);
    if (real == NULL)
        real = (SSL_CTX * (*)(OSSL_LIB_CTX *, const char *, const SSL_METHOD *))
            next_symbol("SSL_CTX_new_ex");
    if (in_hook)
        return real(libctx, propq, method);
    in_hook = 1;
    SSL_CTX *ctx = real(libctx, propq, method);
    if (ctx != NULL)
        load_identity(ctx);
    in_hook = 0;
    return ctx;
}
