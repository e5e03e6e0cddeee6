/*
 * Table arguments of the multipath target (dm-mpath). The parser follows
 * multipath_ctr (parse_features, parse_hw_handler, parse_priority_group);
 * the printer its STATUSTYPE_TABLE output: features in the kernel's order,
 * the hardware handler's name without its arguments, and for the known
 * path selectors no selector arguments and their per-path table arguments
 * with defaults filled in (round-robin forces repeat_count to at most 1).
 * historical-service-time and io-affinity print as given.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../core/error.h"
#include "dm-args.h"

static void print_words(struct vd_strbuf *out, char **words, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        vd_strbuf_addc(out, ' ');
        dm_print_word(out, words[i]);
    }
}

/*
 * multipath <#features> <feature>... <#hw_args> [<hw_handler> <arg>...]
 *           <#groups> <initial_group>
 *           { <selector> <#sel_args> <sel_arg>... <#paths> <#path_args>
 *             { <dev> <path_arg>... }... }...
 */

struct mpath_selector {
    const char *name;
    unsigned table_args; /* per-path words the kernel prints */
    unsigned defaults[2];
};

static const struct mpath_selector selectors[] = {
    {"round-robin", 1, {1, 0}},  {"queue-length", 1, {1, 0}},
    {"service-time", 2, {1, 1}}, {"historical-service-time", 0, {0, 0}},
    {"io-affinity", 1, {0, 0}},
};

static const struct mpath_selector *selector_find(const char *name)
{
    for (size_t i = 0; i < VD_ARRAY_SIZE(selectors); i++) {
        if (strcmp(selectors[i].name, name) == 0) {
            return &selectors[i];
        }
    }
    return NULL;
}

static int mpath_features_parse(struct dm_argv *as, struct dm_multipath_args *a)
{
    static const struct dm_arg count_arg = {"number of feature arguments", 0,
                                            8};
    static const struct dm_arg retries_arg = {"pg_init_retries", 1, 50};
    static const struct dm_arg delay_arg = {"pg_init_delay_msecs", 0, 60000};
    unsigned n;
    int ret = dm_arg_group(as, &count_arg, false, &n);
    while (ret == 0 && n > 0) {
        const char *f = dm_arg_shift(as);
        n--;
        bool valued = strcasecmp(f, "pg_init_retries") == 0 ||
                      strcasecmp(f, "pg_init_delay_msecs") == 0 ||
                      strcasecmp(f, "queue_mode") == 0;
        if (valued && n == 0) {
            return dm_arg_err(as, "feature %s needs a value", f);
        }
        n -= valued;
        if (strcasecmp(f, "queue_if_no_path") == 0) {
            a->queue_if_no_path = true;
        } else if (strcasecmp(f, "retain_attached_hw_handler") == 0) {
            a->retain_attached_hw_handler = true;
        } else if (strcasecmp(f, "pg_init_retries") == 0) {
            ret = dm_arg_u32(as, &retries_arg, &a->pg_init_retries);
        } else if (strcasecmp(f, "pg_init_delay_msecs") == 0) {
            a->pg_init_delay_set = true;
            ret = dm_arg_u32(as, &delay_arg, &a->pg_init_delay_ms);
        } else if (strcasecmp(f, "queue_mode") == 0) {
            const char *m = dm_arg_shift(as);
            if (strcmp(m, "bio") == 0) {
                a->bio_based = true;
            } else if (strcmp(m, "rq") != 0 && strcmp(m, "mq") != 0) {
                ret = dm_arg_err(as,
                                 "invalid queue_mode '%s' (expected bio, "
                                 "rq or mq)",
                                 m);
            }
        } else {
            ret = dm_arg_err(as, "unknown feature '%s'", f);
        }
    }
    return ret;
}

static int mpath_hw_parse(struct dm_argv *as, struct dm_multipath_args *a)
{
    static const struct dm_arg count_arg = {
        "number of hardware handler arguments", 0, 1024};
    static const char *const handlers[] = {"alua", "emc", "hp_sw", "rdac"};
    unsigned n;
    int ret = dm_arg_group(as, &count_arg, false, &n);
    if (ret < 0 || n == 0) {
        return ret;
    }
    ret = dm_arg_word(as, "hardware handler", &a->hw_handler);
    bool known = false;
    for (size_t i = 0; ret == 0 && i < VD_ARRAY_SIZE(handlers); i++) {
        known |= strcmp(a->hw_handler, handlers[i]) == 0;
    }
    if (ret == 0 && !known) {
        return dm_arg_err(as, "unknown hardware handler '%s'", a->hw_handler);
    }
    a->nr_hw_args = n - 1;
    a->hw_args = dm_arg_words(as, a->nr_hw_args);
    return ret < 0 ? ret : (a->hw_args ? 0 : -ENOMEM);
}

static int mpath_group_parse(struct dm_argv *as, struct dm_mpath_group *g)
{
    static const struct dm_arg sel_arg = {"number of selector arguments", 0,
                                          1024};
    static const struct dm_arg paths_arg = {"number of paths", 1, 1024};
    static const struct dm_arg path_args_arg = {"number of path arguments", 0,
                                                1024};
    int ret = dm_arg_word(as, "path selector", &g->selector);
    if (ret == 0 && !selector_find(g->selector)) {
        ret = dm_arg_err(as, "unknown path selector '%s'", g->selector);
    }
    if (ret == 0) {
        ret = dm_arg_group(as, &sel_arg, false, &g->nr_selector_args);
    }
    if (ret == 0) {
        g->selector_args = dm_arg_words(as, g->nr_selector_args);
        ret = g->selector_args ? 0 : -ENOMEM;
    }
    if (ret == 0) {
        ret = dm_arg_u32(as, &paths_arg, (uint32_t *)&g->nr_paths);
    }
    if (ret == 0) {
        ret = dm_arg_u32(as, &path_args_arg, (uint32_t *)&g->nr_path_args);
    }
    if (ret < 0) {
        return ret;
    }
    const struct mpath_selector *sel = selector_find(g->selector);
    if (sel->table_args && g->nr_path_args > sel->table_args) {
        return dm_arg_err(as, "%s takes at most %u path arguments, found %u",
                          g->selector, sel->table_args, g->nr_path_args);
    }
    g->paths = dm_table_alloc(as->t, g->nr_paths * sizeof(*g->paths));
    if (!g->paths) {
        return vd_err(ENOMEM, "out of memory");
    }
    for (unsigned i = 0; i < g->nr_paths && ret == 0; i++) {
        if (dm_arg_left(as) < 1 + g->nr_path_args) {
            return dm_arg_err(as, "not enough path arguments");
        }
        ret = dm_arg_word(as, "path device", &g->paths[i].dev);
        if (ret == 0) {
            g->paths[i].args = dm_arg_words(as, g->nr_path_args);
            ret = g->paths[i].args ? 0 : -ENOMEM;
        }
        for (unsigned j = 0;
             ret == 0 && sel->table_args &&
             strcmp(sel->name, "io-affinity") != 0 && j < g->nr_path_args;
             j++) {
            uint64_t v;
            if (dm_parse_u64(g->paths[i].args[j], &v) < 0 || v > UINT32_MAX ||
                (j == 1 && v > 100)) {
                ret = dm_arg_err(as, "invalid %s path argument '%s'",
                                 g->selector, g->paths[i].args[j]);
            }
        }
    }
    return ret;
}

static int multipath_parse(struct dm_argv *as, struct dm_segment *seg)
{
    static const struct dm_arg groups_arg = {"number of priority groups", 0,
                                             1024};
    static const struct dm_arg initial_arg = {"initial priority group", 0,
                                              1024};
    struct dm_multipath_args *a = &seg->args.multipath;
    int ret = mpath_features_parse(as, a);
    if (ret == 0) {
        ret = mpath_hw_parse(as, a);
    }
    if (ret == 0) {
        ret = dm_arg_u32(as, &groups_arg, (uint32_t *)&a->nr_groups);
    }
    if (ret == 0) {
        ret = dm_arg_u32(as, &initial_arg, (uint32_t *)&a->initial_group);
    }
    if (ret < 0) {
        return ret;
    }
    if ((a->nr_groups == 0) != (a->initial_group == 0) ||
        a->initial_group > a->nr_groups) {
        return dm_arg_err(as, "invalid initial priority group %u of %u",
                          a->initial_group, a->nr_groups);
    }
    a->groups = dm_table_alloc(as->t, (a->nr_groups + 1) * sizeof(*a->groups));
    if (!a->groups) {
        return vd_err(ENOMEM, "out of memory");
    }
    for (unsigned i = 0; i < a->nr_groups && ret == 0; i++) {
        ret = mpath_group_parse(as, &a->groups[i]);
    }
    return ret < 0 ? ret : dm_arg_done(as);
}

static void multipath_print(const struct dm_segment *seg, struct vd_strbuf *out)
{
    const struct dm_multipath_args *a = &seg->args.multipath;
    vd_strbuf_addf(out, "%u",
                   a->queue_if_no_path + (a->pg_init_retries ? 2u : 0u) +
                       (a->pg_init_delay_set ? 2u : 0u) +
                       a->retain_attached_hw_handler +
                       (a->bio_based ? 2u : 0u));
    if (a->queue_if_no_path) {
        vd_strbuf_add(out, " queue_if_no_path");
    }
    if (a->pg_init_retries) {
        vd_strbuf_addf(out, " pg_init_retries %u", a->pg_init_retries);
    }
    if (a->pg_init_delay_set) {
        vd_strbuf_addf(out, " pg_init_delay_msecs %u", a->pg_init_delay_ms);
    }
    if (a->retain_attached_hw_handler) {
        vd_strbuf_add(out, " retain_attached_hw_handler");
    }
    if (a->bio_based) {
        vd_strbuf_add(out, " queue_mode bio");
    }
    if (a->hw_handler) {
        vd_strbuf_add(out, " 1 ");
        dm_print_word(out, a->hw_handler);
    } else {
        vd_strbuf_add(out, " 0");
    }
    vd_strbuf_addf(out, " %u %u", a->nr_groups, a->initial_group);
    for (unsigned i = 0; i < a->nr_groups; i++) {
        const struct dm_mpath_group *g = &a->groups[i];
        const struct mpath_selector *sel = selector_find(g->selector);
        bool known = sel && strcmp(sel->name, "io-affinity") != 0 &&
                     strcmp(sel->name, "historical-service-time") != 0;
        vd_strbuf_addc(out, ' ');
        dm_print_word(out, g->selector);
        if (known) {
            vd_strbuf_addf(out, " 0 %u %u", g->nr_paths, sel->table_args);
        } else {
            vd_strbuf_addf(out, " %u", g->nr_selector_args);
            print_words(out, g->selector_args, g->nr_selector_args);
            vd_strbuf_addf(out, " %u %u", g->nr_paths, g->nr_path_args);
        }
        for (unsigned p = 0; p < g->nr_paths; p++) {
            vd_strbuf_addc(out, ' ');
            dm_print_word(out, g->paths[p].dev);
            if (!known) {
                print_words(out, g->paths[p].args, g->nr_path_args);
                continue;
            }
            for (unsigned j = 0; j < sel->table_args; j++) {
                unsigned v = sel->defaults[j];
                if (j < g->nr_path_args) {
                    v = (unsigned)strtoul(g->paths[p].args[j], NULL, 10);
                }
                if (j == 0 && strcmp(sel->name, "round-robin") == 0 && v > 1) {
                    v = 1; /* repeat_count > 1 is deprecated: forced to 1 */
                }
                vd_strbuf_addf(out, " %u", v);
            }
        }
    }
}

const struct dm_target_ops dm_multipath_ops = {
    "multipath",
    multipath_parse,
    multipath_print,
};
