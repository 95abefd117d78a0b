/* shm_names: name tables generated from shm_tbl.h (eqctl, JSON, metrics). */
#include <errno.h>
#include <string.h>

#include "shm/shm.h"

#define NAME_STR(n, s) s,
static const char *const mode_names[] = { EQ_MODE_TBL(NAME_STR) };
static const char *const override_names[] = { EQ_OVERRIDE_TBL(NAME_STR) };
static const char *const component_names[] = { EQ_COMPONENT_TBL(NAME_STR) };
static const char *const cstate_names[] = { EQ_CSTATE_TBL(NAME_STR) };
static const char *const role_names[] = { EQ_ROLE_TBL(NAME_STR) };
static const char *const wstate_names[] = { EQ_WSTATE_TBL(NAME_STR) };
static const char *const source_names[] = { EQ_SOURCE_TBL(NAME_STR) };
static const char *const endpoint_names[] = { EQ_ENDPOINT_TBL(NAME_STR) };
static const char *const evc_names[] = { EQ_EVENT_COUNTER_TBL(NAME_STR) };
static const char *const hkind_names[] = { EQ_HISTORY_KIND_TBL(NAME_STR) };
#define CODE_VAL(c) c,
static const int http_codes[] = { EQ_HTTP_CODE_TBL(CODE_VAL) };
#define BKT_VAL(us) us,
static const uint64_t buckets[] = { EQ_LATENCY_BUCKET_TBL(BKT_VAL) };

#define LOOKUP(tbl, i) ((i) < sizeof(tbl) / sizeof(tbl[0]) ? tbl[i] : "invalid")

const char *shm_mode_name(unsigned m) { return LOOKUP(mode_names, m); }
const char *shm_override_name(unsigned o) { return LOOKUP(override_names, o); }
const char *shm_component_name(unsigned c) { return LOOKUP(component_names, c); }
const char *shm_cstate_name(unsigned st) { return LOOKUP(cstate_names, st); }
const char *shm_role_name(unsigned r) { return LOOKUP(role_names, r); }
const char *shm_wstate_name(unsigned w) { return LOOKUP(wstate_names, w); }
const char *shm_source_name(unsigned src) { return LOOKUP(source_names, src); }
const char *shm_endpoint_name(unsigned ep) { return LOOKUP(endpoint_names, ep); }
const char *shm_event_counter_name(unsigned c) { return LOOKUP(evc_names, c); }
const char *shm_history_kind_name(unsigned k) { return LOOKUP(hkind_names, k); }

int shm_http_code_value(unsigned idx)
{
	return idx < EQ_HTTP__COUNT ? http_codes[idx] : 500;
}

unsigned shm_http_code_index(int code)
{
	for (unsigned i = 0; i < EQ_HTTP__COUNT; i++)
		if (http_codes[i] == code)
			return i;
	return EQ_HTTP_500;
}

uint64_t shm_latency_bucket_us(unsigned i)
{
	return i < EQ_LATENCY_BUCKETS ? buckets[i] : UINT64_MAX;
}

static int parse_name(const char *const *tbl, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(tbl[i], s) == 0)
			return (int)i;
	return -EINVAL;
}

int shm_mode_parse(const char *s)
{
	return parse_name(mode_names, EQ_MODE__COUNT, s);
}

int shm_component_parse(const char *s)
{
	return parse_name(component_names, EQ_COMP__COUNT, s);
}
