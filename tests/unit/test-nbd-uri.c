/* Unit tests for the NBD client's URI parser (backends/nbd-uri.c): the
 * examples of the NBD URI document, QEMU's older forms and malformed
 * names, which must fail with a message and leave nothing allocated. */
#include <errno.h>
#include <string.h>

#include "backends/nbd-client.h"
#include "core/error.h"
#include "harness.h"

/* Parse text and compare every field; NULL expects the field unset. */
static void check_uri(const char *text, const char *host, const char *port,
                      const char *socket, const char *export_name)
{
    struct nbd_uri uri;
    int ret = nbd_uri_parse(text, &uri);
    CHECK_EQ_U64(ret, 0);
    if (ret < 0) {
        printf("  %s: %s\n", text, vd_err_message());
        return;
    }
    CHECK(host ? uri.host && strcmp(uri.host, host) == 0 : !uri.host);
    CHECK(port ? uri.port && strcmp(uri.port, port) == 0 : !uri.port);
    CHECK(socket ? uri.socket && strcmp(uri.socket, socket) == 0 : !uri.socket);
    CHECK_STREQ(uri.export_name, export_name);
    nbd_uri_free(&uri);
}

static void check_bad(const char *text, int errnum, const char *words)
{
    struct nbd_uri uri;
    vd_err_clear();
    CHECK_EQ_U64(nbd_uri_parse(text, &uri), (uint64_t)-errnum);
    if (!strstr(vd_err_message(), words)) {
        printf("  %s: '%s' lacks '%s'\n", text, vd_err_message(), words);
        CHECK(false);
    }
    CHECK(!uri.host && !uri.port && !uri.socket && !uri.export_name);
}

TEST(document_examples)
{
    check_uri("nbd://example.com/disk", "example.com", "10809", NULL, "disk");
    check_uri("nbd+unix:///disk?socket=sock", NULL, NULL, "sock", "disk");
    check_uri("nbd://example.com/", "example.com", "10809", NULL, "");
    check_uri("nbd://example.com", "example.com", "10809", NULL, "");
    check_uri("nbd://example.com//disk", "example.com", "10809", NULL, "/disk");
    check_uri("nbd://example.com/hello%20world", "example.com", "10809", NULL,
              "hello world");
}

TEST(hosts_ports_and_sockets)
{
    check_uri("nbd://127.0.0.1:10810/x", "127.0.0.1", "10810", NULL, "x");
    check_uri("nbd+tcp://h:1", "h", "1", NULL, "");
    check_uri("nbd://[::1]:2000/e%2Fx", "::1", "2000", NULL, "e/x");
    check_uri("nbd://[fe80::1]", "fe80::1", "10809", NULL, "");
    check_uri("nbd+unix:///?socket=/run/a%20b.sock", NULL, NULL,
              "/run/a b.sock", "");
    check_uri("nbd+unix://?socket=s", NULL, NULL, "s", "");
}

TEST(legacy_forms)
{
    check_uri("nbd:localhost:10809", "localhost", "10809", NULL, "");
    check_uri("nbd:host:1234:exportname=disk", "host", "1234", NULL, "disk");
    check_uri("nbd:host", "host", "10809", NULL, "");
    check_uri("nbd:[::1]:99", "::1", "99", NULL, "");
    check_uri("nbd:unix:/tmp/s.sock", NULL, NULL, "/tmp/s.sock", "");
    check_uri("nbd:unix:/tmp/s.sock:exportname=a b", NULL, NULL, "/tmp/s.sock",
              "a b");
}

TEST(malformed)
{
    check_bad("nbds://host/x", ENOTSUP, "TLS");
    check_bad("nbds+unix:///?socket=s", ENOTSUP, "TLS");
    check_bad("nbd+unix:///x", EINVAL, "socket=");
    check_bad("nbd+unix:///x?socket=", EINVAL, "socket=");
    check_bad("nbd+unix://host/x?socket=s", EINVAL, "take no host");
    check_bad("nbd://host/x?socket=s", EINVAL, "unknown query parameter");
    check_bad("nbd+unix:///?socket=s&tls-type=x", EINVAL,
              "unknown query parameter 'tls-type'");
    check_bad("nbd+unix:///?socket=a&socket=b", EINVAL, "more than one");
    check_bad("nbd:///x", EINVAL, "no server host");
    check_bad("nbd:/x", EINVAL, "not an NBD URI");
    check_bad("nbd://", EINVAL, "no server host");
    check_bad("nbd://:10809/x", EINVAL, "no server host");
    check_bad("nbd://h:0/x", EINVAL, "port");
    check_bad("nbd://h:65536/x", EINVAL, "port");
    check_bad("nbd://h:12a/x", EINVAL, "port");
    check_bad("nbd://[::1/x", EINVAL, "IPv6");
    check_bad("nbd://[::1]x/x", EINVAL, "IPv6");
    check_bad("nbd://h/a%2", EINVAL, "percent");
    check_bad("nbd://h/a%zz", EINVAL, "percent");
    check_bad("nbd://h/a%00b", EINVAL, "percent");
    check_bad("nbd://h/x#frag", EINVAL, "fragment");
    check_bad("nbd://user@h/x", ENOTSUP, "TLS");
    check_bad("nbd:unix:", EINVAL, "socket path");
}

int main(void)
{
    RUN(document_examples);
    RUN(hosts_ports_and_sockets);
    RUN(legacy_forms);
    RUN(malformed);
    return harness_exit();
}
