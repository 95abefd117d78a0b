/* pr_events: POST /v1/events body validation (see pr_events.h). */
#include "workers/pricing/pr_events.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *pr_event_type_name(enum pr_event_type t)
{
	return t == PR_EVENT_SUPPLY ? "supply" : "demand";
}

__attribute__((format(printf, 3, 4)))
static int bad(struct pr_events_err *err, long index, const char *fmt, ...)
{
	va_list ap;

	err->index = index;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int parse_one(json_t *o, long i, struct pr_event *ev, struct pr_events_err *err)
{
	const char *key, *s;
	json_t *v;
	bool have_type = false, have_zone = false, have_count = false;

	if (!json_is_object(o))
		return bad(err, i, "%s", "an event must be a JSON object");
	ev->ts_ms = -1;
	json_object_foreach(o, key, v) {
		if (strcmp(key, "type") == 0) {
			s = json_string_value(v);
			if (s && strcmp(s, "demand") == 0 && json_string_length(v) == 6)
				ev->type = PR_EVENT_DEMAND;
			else if (s && strcmp(s, "supply") == 0 && json_string_length(v) == 6)
				ev->type = PR_EVENT_SUPPLY;
			else
				return bad(err, i, "%s", "\"type\" must be \"demand\" or \"supply\"");
			have_type = true;
		} else if (strcmp(key, "zone_id") == 0) {
			size_t n = json_string_length(v);
			s = json_string_value(v);
			if (s == NULL || !proto_zone_id_ok(s, n))
				return bad(err, i, "%s", "\"zone_id\" must be a string of 1 to 64 "
				           "characters of [A-Za-z0-9_.:-]");
			memcpy(ev->zone_id, s, n);
			ev->zone_id[n] = '\0';
			ev->zone_len = n;
			have_zone = true;
		} else if (strcmp(key, "count") == 0) {
			if (!json_is_integer(v) || json_integer_value(v) < 0)
				return bad(err, i, "%s", "\"count\" must be an integer >= 0");
			ev->count = json_integer_value(v);
			have_count = true;
		} else if (strcmp(key, "ts") == 0) {
			if (!json_is_integer(v) || json_integer_value(v) < 0)
				return bad(err, i, "%s", "\"ts\" must be unix time in milliseconds "
				           "(an integer >= 0)");
			ev->ts_ms = json_integer_value(v);
		} else {
			return bad(err, i, "unknown field \"%.60s\" (allowed: type, zone_id, count, ts)", key);
		}
	}
	if (!have_type)
		return bad(err, i, "%s", "\"type\" is required");
	if (!have_zone)
		return bad(err, i, "%s", "\"zone_id\" is required");
	if (!have_count)
		return bad(err, i, "%s", "\"count\" is required");
	return 0;
}

int pr_events_parse(const char *body, size_t len, struct pr_event *out, size_t *n,
                    struct pr_events_err *err)
{
	json_error_t je;
	json_t *root;
	int rc = 0;

	*n = 0;
	if (body == NULL || len == 0)
		return bad(err, -1, "%s", "the body must be a JSON event object or array of events");
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
	if (root == NULL) {
		err->index = -1;
		snprintf(err->message, sizeof(err->message), "body is not valid JSON: %s (at byte %d)",
		         je.text, je.position);
		return -EINVAL;
	}
	if (json_is_object(root)) {
		rc = parse_one(root, 0, &out[0], err);
		if (rc == 0)
			*n = 1;
	} else if (json_is_array(root)) {
		size_t count = json_array_size(root);
		if (count == 0)
			rc = bad(err, -1, "%s", "the array of events is empty");
		else if (count > PR_EVENTS_MAX)
			rc = bad(err, -1, "%s", "at most 1000 events per request");
		for (size_t i = 0; rc == 0 && i < count; i++)
			rc = parse_one(json_array_get(root, i), (long)i, &out[i], err);
		if (rc == 0)
			*n = count;
	} else {
		rc = bad(err, -1, "%s", "the body must be a JSON event object or array of events");
	}
	json_decref(root);
	return rc;
}
