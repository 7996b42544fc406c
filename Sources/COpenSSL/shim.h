#ifndef TERN_COPENSSL_SHIM_H
#define TERN_COPENSSL_SHIM_H
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/crypto.h>
#include <openssl/opensslv.h>
#endif
