/*
 * NBD URIs (the NBD URI format document, RFC 3986 underneath) and QEMU's
 * older "nbd:HOST:PORT" forms. The parser is strict, as qemu's is: a
 * query parameter it does not know is an error, not a silent default.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "nbd-client.h"
#include "util/hex.h"

#define LEGACY_EXPORT_KEY ":exportname="

void nbd_uri_free(struct nbd_uri *uri)
{
    free(uri->host);
    free(uri->port);
    free(uri->socket);
    free(uri->export_name);
    memset(uri, 0, sizeof(*uri));
}

/* The len bytes at text with %XX escapes decoded, or NULL with the error
 * set. Names cannot hold NUL, so %00 is refused. */
static char *percent_decode(const char *text, size_t len, const char *uri)
{
    char *out = malloc(len + 1);
    size_t n = 0;
    if (!out) {
        vd_err(ENOMEM, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] != '%') {
            out[n++] = text[i];
            continue;
        }
        int hi = i + 2 < len ? vd_hex_digit(text[i + 1]) : -1;
        int lo = i + 2 < len ? vd_hex_digit(text[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free(out);
            vd_err(EINVAL, "%s: invalid percent-encoding in the URI", uri);
            return NULL;
        }
        out[n++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[n] = '\0';
    return out;
}

static char *dup_or_err(const char *text, size_t len)
{
    char *out = strndup(text, len);
    if (!out) {
        vd_err(ENOMEM, "out of memory");
    }
    return out;
}

/* A TCP port: 1-65535 in decimal. */
static bool valid_port(const char *text, size_t len)
{
    unsigned long value = 0;
    if (len == 0 || len > 5) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9') {
            return false;
        }
        value = value * 10 + (unsigned long)(text[i] - '0');
    }
    return value >= 1 && value <= 65535;
}

/*
 * "HOST[:PORT]" or "[V6ADDR][:PORT]" (len bytes at text) into uri->host
 * and uri->port.
 */
static int parse_host_port(const char *text, size_t len, const char *name,
                           struct nbd_uri *uri)
{
    const char *host = text, *port = NULL;
    size_t host_len = len, port_len = 0;

    if (len > 0 && text[0] == '[') {
        const char *close = memchr(text, ']', len);
        if (!close || close == text + 1) {
            return vd_err(EINVAL, "%s: invalid IPv6 address", name);
        }
        host = text + 1;
        host_len = (size_t)(close - host);
        size_t used = (size_t)(close + 1 - text);
        if (used < len) {
            if (text[used] != ':') {
                return vd_err(EINVAL, "%s: invalid IPv6 address", name);
            }
            port = text + used + 1;
            port_len = len - used - 1;
        }
    } else {
        const char *colon = memchr(text, ':', len);
        if (colon) {
            host_len = (size_t)(colon - text);
            port = colon + 1;
            port_len = len - host_len - 1;
        }
    }
    if (host_len == 0) {
        return vd_err(EINVAL, "%s: the URI names no server host", name);
    }
    if (port && !valid_port(port, port_len)) {
        return vd_err(EINVAL, "%s: invalid port number", name);
    }
    uri->host = percent_decode(host, host_len, name);
    uri->port = port ? dup_or_err(port, port_len) : strdup(NBD_DEFAULT_PORT);
    if (!uri->host || !uri->port) {
        return uri->host ? vd_err(ENOMEM, "out of memory") : -EINVAL;
    }
    return 0;
}

/* "key=value&..." (len bytes at query): only socket=, and only for Unix
 * sockets. */
static int parse_query(const char *query, size_t len, bool is_unix,
                       const char *name, struct nbd_uri *uri)
{
    const char *end = query + len;
    while (query < end) {
        const char *amp = memchr(query, '&', (size_t)(end - query));
        const char *item_end = amp ? amp : end;
        const char *eq = memchr(query, '=', (size_t)(item_end - query));
        size_t key_len = (size_t)((eq ? eq : item_end) - query);

        if (key_len == 6 && memcmp(query, "socket", 6) == 0 && eq && is_unix) {
            if (uri->socket) {
                return vd_err(EINVAL, "%s: more than one socket parameter",
                              name);
            }
            uri->socket =
                percent_decode(eq + 1, (size_t)(item_end - eq - 1), name);
            if (!uri->socket) {
                return -EINVAL;
            }
        } else if (key_len > 0) {
            return vd_err(EINVAL, "%s: unknown query parameter '%.*s'", name,
                          (int)key_len, query);
        }
        query = amp ? amp + 1 : end;
    }
    return 0;
}

/* scheme://authority/path?query (the text after "scheme://"). */
static int parse_uri(const char *rest, bool is_unix, const char *name,
                     struct nbd_uri *uri)
{
    size_t auth_len = strcspn(rest, "/?#");
    const char *path = rest + auth_len;
    size_t path_len = strcspn(path, "?#");
    const char *query = path + path_len;
    size_t query_len = 0;
    int ret;

    if (*query == '?') {
        query++;
        query_len = strcspn(query, "#");
    }
    if (query[query_len] == '#') {
        return vd_err(EINVAL, "%s: NBD URIs take no fragment", name);
    }
    if (memchr(rest, '@', auth_len)) {
        return vd_err(ENOTSUP,
                      "%s: user names are for TLS, which is not "
                      "supported",
                      name);
    }
    if (is_unix) {
        if (auth_len > 0) {
            return vd_err(EINVAL, "%s: nbd+unix:// URIs take no host", name);
        }
    } else if ((ret = parse_host_port(rest, auth_len, name, uri)) < 0) {
        return ret;
    }
    if ((ret = parse_query(query, query_len, is_unix, name, uri)) < 0) {
        return ret;
    }
    if (is_unix && (!uri->socket || !*uri->socket)) {
        return vd_err(EINVAL, "%s: nbd+unix:// needs ?socket=PATH", name);
    }
    /* The export name is the path less its first '/'. */
    if (path_len > 0) {
        path++;
        path_len--;
    }
    uri->export_name = percent_decode(path, path_len, name);
    return uri->export_name ? 0 : -EINVAL;
}

/* nbd:unix:PATH[:exportname=NAME] and nbd:HOST[:PORT][:exportname=NAME]. */
static int parse_legacy(const char *rest, const char *name, struct nbd_uri *uri)
{
    const char *key = strstr(rest, LEGACY_EXPORT_KEY);
    size_t len = key ? (size_t)(key - rest) : strlen(rest);

    uri->export_name =
        key ? strdup(key + strlen(LEGACY_EXPORT_KEY)) : strdup("");
    if (!uri->export_name) {
        return vd_err(ENOMEM, "out of memory");
    }
    if (strncmp(rest, "unix:", 5) == 0) {
        if (len <= 5) {
            return vd_err(EINVAL, "%s: no socket path", name);
        }
        uri->socket = dup_or_err(rest + 5, len - 5);
        return uri->socket ? 0 : -ENOMEM;
    }
    return parse_host_port(rest, len, name, uri);
}

char *nbd_uri_display(const struct nbd_uri *uri)
{
    char *out = NULL;
    const char *slash = *uri->export_name ? "/" : "";
    int ret;
    if (uri->socket) {
        ret = asprintf(&out, "nbd+unix://%s%s?socket=%s", slash,
                       uri->export_name, uri->socket);
    } else {
        bool v6 = strchr(uri->host, ':') != NULL;
        ret = asprintf(&out, "nbd://%s%s%s:%s%s%s", v6 ? "[" : "", uri->host,
                       v6 ? "]" : "", uri->port, slash, uri->export_name);
    }
    if (ret < 0) {
        vd_err(ENOMEM, "out of memory");
        return NULL;
    }
    return out;
}

int nbd_uri_parse(const char *text, struct nbd_uri *out)
{
    static const struct {
        const char *prefix;
        bool is_unix;
        bool tls;
    } schemes[] = {
        {"nbd://", false, false},     {"nbd+tcp://", false, false},
        {"nbd+unix://", true, false}, {"nbds://", false, true},
        {"nbds+tcp://", false, true}, {"nbds+unix://", true, true},
    };
    int ret;

    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        size_t len = strlen(schemes[i].prefix);
        if (strncmp(text, schemes[i].prefix, len) != 0) {
            continue;
        }
        if (schemes[i].tls) {
            return vd_err(ENOTSUP, "%s: NBD over TLS is not supported", text);
        }
        ret = parse_uri(text + len, schemes[i].is_unix, text, out);
        goto done;
    }
    if (strncmp(text, "nbd:", 4) != 0 || strncmp(text, "nbd:/", 5) == 0) {
        return vd_err(EINVAL, "%s: not an NBD URI", text);
    }
    ret = parse_legacy(text + 4, text, out);
done:
    if (ret < 0) {
        nbd_uri_free(out);
    }
    return ret;
}
