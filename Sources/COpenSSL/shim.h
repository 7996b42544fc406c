#ifndef TERN_COPENSSL_SHIM_H
#define TERN_COPENSSL_SHIM_H
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/crypto.h>
#include <openssl/opensslv.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

// Function-like OpenSSL macros, which Swift cannot call: one inline wrapper each.

static inline int tern_ssl_ctx_set_min_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_min_proto_version(ctx, version);
}
static inline int tern_ssl_ctx_set_max_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_max_proto_version(ctx, version);
}
static inline int tern_ssl_ctx_set1_groups_list(SSL_CTX *ctx, const char *list) {
    return (int)SSL_CTX_set1_groups_list(ctx, list);
}
/// Takes ownership of `x509` on success.
static inline int tern_ssl_ctx_add0_chain_cert(SSL_CTX *ctx, X509 *x509) {
    return (int)SSL_CTX_add0_chain_cert(ctx, x509);
}

/// The name of the one cipher `ctx` allows, or NULL when it allows none or several (the
/// STACK_OF accessors are macros).
static inline const char *tern_ssl_ctx_single_cipher_name(SSL_CTX *ctx) {
    STACK_OF(SSL_CIPHER) *list = SSL_CTX_get_ciphers(ctx);
    if (list == NULL || sk_SSL_CIPHER_num(list) != 1) return NULL;
    return SSL_CIPHER_get_name(sk_SSL_CIPHER_value(list, 0));
}

/// Whether the last error queued is PEM's "no start line": a read of PEM blocks that ends with it
/// ran out of blocks; any other error is a malformed (truncated, half-written) block.
static inline int tern_err_last_is_pem_end(void) {
    unsigned long e = ERR_peek_last_error();
    return ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
}

/// Upstream TLS: SNI (a macro over SSL_ctrl).
static inline int tern_ssl_set_tlsext_host_name(SSL *ssl, const char *name) {
    return (int)SSL_set_tlsext_host_name(ssl, name);
}

/// A client context's fixed modes and options: the server side's I/O modes (see below), no
/// renegotiation or compression, a TCP close without close_notify read as the end of the stream,
/// and sessions handed to the new-session callback only (Tern keeps them per worker and host).
static inline void tern_ssl_ctx_set_client_defaults(SSL_CTX *ctx) {
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
}

/// A server context's fixed modes and options: partial writes with a buffer that may move
/// between retries (the connection's output buffer is retried at its current read pointer),
/// OpenSSL's buffers released while a connection is idle, read-ahead (one read(2) per batch of
/// records instead of two per record), no renegotiation (a CPU-cost lever for clients), the
/// server's cipher order, and a peer's TCP close without close_notify read as the end of the
/// stream (HTTP and bolt frame their own messages, as nginx and HAProxy treat it).
static inline void tern_ssl_ctx_set_server_defaults(SSL_CTX *ctx) {
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF
                             | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    // One TLS 1.3 ticket per full handshake, as Go's server (MOSN) sends: a client resumes with
    // one, and OpenSSL's default second ticket costs a key derivation and an encryption each time.
    SSL_CTX_set_num_tickets(ctx, 1);
    // Go's TLS 1.3 preference with AES hardware (AES-128 first): the cheaper key schedule (SHA-256)
    // and the suite every TLS 1.3 peer must offer. `cipher_suites` in the config replaces it.
    SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
}

// Certificates by SNI (tls_context_set): a connection's SSL moves to the chosen context in the
// ClientHello callback, and the settings SSL_new copied from the first context follow it.

static inline int tern_ssl_ctx_get_min_proto_version(SSL_CTX *ctx) { return (int)SSL_CTX_get_min_proto_version(ctx); }
static inline int tern_ssl_ctx_get_max_proto_version(SSL_CTX *ctx) { return (int)SSL_CTX_get_max_proto_version(ctx); }
static inline int tern_ssl_set_min_proto_version(SSL *ssl, int version) { return (int)SSL_set_min_proto_version(ssl, version); }
static inline int tern_ssl_set_max_proto_version(SSL *ssl, int version) { return (int)SSL_set_max_proto_version(ssl, version); }

/// A certificate's subjectAltName entries (NULL when it has none); free with tern_alt_names_free.
static inline GENERAL_NAMES *tern_x509_alt_names(const X509 *x509) {
    return (GENERAL_NAMES *)X509_get_ext_d2i(x509, NID_subject_alt_name, NULL, NULL);
}
static inline int tern_alt_names_count(const GENERAL_NAMES *names) { return sk_GENERAL_NAME_num(names); }
/// The bytes of entry `index` when it is a DNS name (its length), else -1.
static inline int tern_alt_name_dns(const GENERAL_NAMES *names, int index, const unsigned char **bytes) {
    const GENERAL_NAME *name = sk_GENERAL_NAME_value(names, index);
    if (name == NULL || name->type != GEN_DNS) return -1;
    *bytes = ASN1_STRING_get0_data(name->d.dNSName);
    return ASN1_STRING_length(name->d.dNSName);
}
static inline void tern_alt_names_free(GENERAL_NAMES *names) { GENERAL_NAMES_free(names); }

#endif
