/*
 * util_version: the one version string every binary prints (--version),
 * the status JSON carries (`version`) and eq_build_info exports.  It is
 * meson's project version, followed by "+g<git describe id>" when the
 * build ran in a git checkout (".dirty" when it had local changes).
 */
#include "util/util.h"

#include "util_version_gen.h"

const char *util_version(void)
{
	return UTIL_VERSION_STRING;
}
