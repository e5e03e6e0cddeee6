/* The static list of built-in drivers; no plugins are loaded at run time. */
#include <string.h>

#include "driver.h"

extern const struct vd_driver file_driver, mem_driver, raw_driver;
extern const struct vd_driver nbd_driver;
extern const struct vd_driver vhdx_driver;
extern const struct vd_driver qcow2_driver;
extern const struct vd_driver dm_driver;
extern const struct vd_driver dbs_driver;

/* Probing order: specific formats first, raw (score 1) last. */
const struct vd_driver *const vd_format_drivers[] = {
    &qcow2_driver,
    &vhdx_driver,
    &raw_driver,
    NULL,
};

static const struct vd_driver *const all_drivers[] = {
    &file_driver, &mem_driver, &qcow2_driver, &vhdx_driver,
    &raw_driver,  &dm_driver,  &dbs_driver,   &nbd_driver,
};

const struct vd_driver *vd_driver_find(const char *name)
{
    for (size_t i = 0; i < sizeof(all_drivers) / sizeof(all_drivers[0]); i++) {
        if (strcmp(all_drivers[i]->name, name) == 0) {
            return all_drivers[i];
        }
    }
    return NULL;
}

const struct vd_driver *vd_driver_find_uri(const char *spec)
{
    size_t scheme_len = strcspn(spec, ":");
    for (size_t i = 0; spec[scheme_len] == ':' &&
                       i < sizeof(all_drivers) / sizeof(all_drivers[0]);
         i++) {
        for (const char *const *scheme = all_drivers[i]->uri_schemes;
             scheme && *scheme; scheme++) {
            if (strlen(*scheme) == scheme_len &&
                strncmp(spec, *scheme, scheme_len) == 0) {
                return all_drivers[i];
            }
        }
    }
    return NULL;
}

const struct vd_driver *vd_driver_find_kind(const char *name, enum vd_kind kind)
{
    const struct vd_driver *drv = vd_driver_find(name);
    return drv && drv->kind == kind ? drv : NULL;
}
