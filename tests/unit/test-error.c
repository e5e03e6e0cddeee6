/* Unit tests for core/error.c: the thread-local last error. */
#include <errno.h>
#include <pthread.h>

#include "core/error.h"
#include "harness.h"

TEST(clear_state)
{
    vd_err_clear();
    CHECK_STREQ(vd_err_message(), "");
    CHECK(vd_err_errno() == 0);
}

TEST(basic)
{
    vd_err_clear();
    CHECK(vd_err(EINVAL, "cluster_bits %u not in [9, 21]", 30u) == -EINVAL);
    CHECK_STREQ(vd_err_message(), "cluster_bits 30 not in [9, 21]");
    CHECK(vd_err_errno() == EINVAL);

    /* A later error replaces the earlier one. */
    CHECK(vd_err(ENOSPC, "full") == -ENOSPC);
    CHECK_STREQ(vd_err_message(), "full");
    CHECK(vd_err_errno() == ENOSPC);

    /* -errno is accepted too; 0 never yields "success". */
    CHECK(vd_err(-EROFS, "ro") == -EROFS);
    CHECK(vd_err_errno() == EROFS);
    CHECK(vd_err(0, "zero") == -EIO);
    CHECK(vd_err_errno() == EIO);

    vd_err_clear();
    CHECK_STREQ(vd_err_message(), "");
    CHECK(vd_err_errno() == 0);
}

TEST(sys)
{
    CHECK(vd_err_sys(ENOENT, "open %s", "disk.img") == -ENOENT);
    CHECK_STREQ(vd_err_message(), "open disk.img: No such file or directory");
    CHECK(vd_err_errno() == ENOENT);
}

TEST(corrupt)
{
    CHECK(vd_corrupt("L2 table at 0x%x is misaligned", 0x10200) == -EUCLEAN);
    CHECK_STREQ(vd_err_message(), "L2 table at 0x10200 is misaligned");
    CHECK(vd_err_errno() == EUCLEAN);
}

TEST(prefix)
{
    vd_err(EIO, "read failed");
    vd_err_prefix("qcow2: L2 table at %#x", 0x30000);
    CHECK_STREQ(vd_err_message(), "qcow2: L2 table at 0x30000: read failed");
    vd_err_prefix("vdisk_open");
    CHECK_STREQ(vd_err_message(),
                "vdisk_open: qcow2: L2 table at 0x30000: read failed");
    CHECK(vd_err_errno() == EIO);

    /* Without a message the prefix alone becomes the message. */
    vd_err_clear();
    vd_err_prefix("ctx");
    CHECK_STREQ(vd_err_message(), "ctx");
}

TEST(default_message)
{
    /* Nothing recorded: the strerror text is used. */
    vd_err_clear();
    CHECK(vd_err_default(EIO) == -EIO);
    CHECK_STREQ(vd_err_message(), "Input/output error");
    CHECK(vd_err_errno() == EIO);

    /* A message for the same errno is kept. */
    vd_err(ENOSPC, "no room for the L1 table");
    CHECK(vd_err_default(-ENOSPC) == -ENOSPC);
    CHECK_STREQ(vd_err_message(), "no room for the L1 table");

    /* A message for another errno is stale: replaced. */
    CHECK(vd_err_default(EROFS) == -EROFS);
    CHECK_STREQ(vd_err_message(), "Read-only file system");
    CHECK(vd_err_errno() == EROFS);
}

TEST(self_reference)
{
    vd_err(EINVAL, "inner");
    vd_err(EIO, "outer: %s", vd_err_message());
    CHECK_STREQ(vd_err_message(), "outer: inner");
}

TEST(truncation)
{
    char big[3000];

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CHECK(vd_err(E2BIG, "%s", big) == -E2BIG);
    CHECK(strlen(vd_err_message()) > 500);
    CHECK(strlen(vd_err_message()) < sizeof(big) - 1);
    CHECK(vd_err_message()[0] == 'x');
    vd_err_sys(ENOENT, "%s", big);
    CHECK(strlen(vd_err_message()) < sizeof(big) - 1);
    vd_err_prefix("%s", big);
    CHECK(strlen(vd_err_message()) < sizeof(big) - 1);
    vd_err_prefix("p");
    CHECK(strncmp(vd_err_message(), "p: xxx", 6) == 0);
}

static void *thread_main(void *arg)
{
    (void)arg;
    /* A new thread starts clear and has its own error. */
    if (vd_err_errno() != 0 || vd_err_message()[0] != '\0') {
        return (void *)1;
    }
    vd_err(ENOMEM, "thread");
    return NULL;
}

TEST(thread_local)
{
    pthread_t t;
    void *res = (void *)1;

    vd_err(EBADF, "main");
    CHECK(pthread_create(&t, NULL, thread_main, NULL) == 0);
    CHECK(pthread_join(t, &res) == 0);
    CHECK(res == NULL);
    CHECK_STREQ(vd_err_message(), "main");
    CHECK(vd_err_errno() == EBADF);
}

int main(void)
{
    RUN(clear_state);
    RUN(basic);
    RUN(sys);
    RUN(corrupt);
    RUN(prefix);
    RUN(default_message);
    RUN(self_reference);
    RUN(truncation);
    RUN(thread_local);
    return harness_exit();
}
