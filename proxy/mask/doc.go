// Package mask finds sensitive values in what a target returns and replaces
// them. It is protocol-neutral: engines call it for database values (Text,
// Bytes, Replace) and decoded HTTP JSON bodies (JSON).
//
// # Obligations
//
// A decision's "mask" entries (decision.Mask) are of three kinds:
//
//   - {"detector": name} replaces only the parts of every text value that the
//     detector recognises. New compiles these into a Masker; an unknown name is
//     an error (callers deny). Names are exact and case-sensitive. When a
//     detector is listed twice, the first entry's "with" is used.
//   - {"column": name} replaces whole database values (the engine picks the
//     columns and calls Replace).
//   - {"field": pointer} replaces whole values inside a JSON document (JSON).
//
// # Replacements
//
// "with", when non-empty, is the replacement: every detector match, or every
// whole value, becomes exactly that literal. Without "with":
//
//   - a detector match gets the detector's default replacement (table below);
//   - a whole value (Replace) whose text, with leading and trailing white
//     space trimmed, is exactly one detector match gets that detector's default
//     replacement of the trimmed text (so an email column reads
//     "a***@example.com", a card column "**** **** **** 1111"); any other value,
//     the empty string included, becomes "********".
//
// # Detectors
//
// Detection is by hand-written scanners over bytes (ASCII only: a value's
// non-ASCII bytes never match and are kept). A value first goes through a
// pre-scan, one table lookup per byte, that notes which kinds of characters it
// holds; a detector whose required characters are absent (no '@', too few
// digits, no '-', …) is skipped, so a value with no candidate costs no
// allocation and a few tens of nanoseconds.
//
// "Number edge" below means: the neighbouring byte is not a letter, digit or
// '_', and is not a '.' or '-' that is itself next to a digit (so "1.5" and
// "12-34" are one number, and nothing matches inside them).
//
// email: the run of [A-Za-z0-9._%+-] just before an '@' (at most 64 bytes;
// leading dots are not part of the match; it must not end with a dot), the
// '@', then two or more dot-separated labels of 1–63 bytes from [A-Za-z0-9-]
// not starting or ending with '-', the last made of two or more letters. The
// domain is the longest such run ("x@example.com.123" matches
// "x@example.com"). A run longer than 64 bytes is not an address. Default:
// the local part's first character, "***", then "@" and the domain, as in
// "a***@example.com".
//
// credit_card: 13–19 digits that pass the Luhn check, either one run of
// digits or groups of 3–8 digits joined by single separators that are all
// spaces or all dashes ("4111 1111 1111 1111", "4111-1111-1111-1111",
// "3782 822463 10005", "4111111111111111"). A match has number edges on both
// sides and is not preceded by '+'; it never starts or ends inside a run of
// digits, so a longer number never yields a card. Within space-separated
// groups the longest valid span wins ("page 12 4111 1111 1111 1111" masks the
// last four groups). Default: every digit but the last four becomes '*',
// separators kept: "**** **** **** 1111", "************1111".
//
// ssn: US social security numbers written ddd-dd-dddd (dashes required), with
// number edges, excluding area 000, 666 and 900–999, group 00 and serial 0000.
// Default: "***-**-" and the last four digits.
//
// phone: (1) '+' (not preceded by a letter, digit or '_'), then a digit or '(',
// then 8–15 digits in groups separated by at most two consecutive characters
// of " -.()" ("+1 (415) 555-2671", "+44 20 7946 0958", "+4915112345678"); the
// number ends at its last digit, must not be followed by a letter, digit or
// '_', and stops before a digit group that would make it longer than 15
// digits. (2) North-American numbers with number edges: "ddd-ddd-dddd",
// "ddd.ddd.dddd" (optionally preceded by "1-" or "1." with the same
// separator), "(ddd) ddd-dddd" and "(ddd)ddd-dddd", where neither the area
// code nor the exchange starts with 0 or 1. Dates ("2026-11-25") and other
// shapes do not match. Default: every digit but the last two becomes '*',
// everything else kept: "+** ** **** **58", "(***) ***-**71".
//
// iban: two upper-case letters, two digits and 11–30 upper-case letters or
// digits (15–34 in all), not preceded by a letter, digit or '_', either compact
// ("GB82WEST12345698765432", not followed by a letter, digit or '_') or as the
// first four characters followed by groups of four separated by single spaces,
// the last group 1–4 characters ("GB82 WEST 1234 5698 7654 32"); the longest
// grouping that passes the ISO 13616 mod-97 check wins, so a following word
// ("… 32 EUR") is not swallowed. Lower-case IBANs do not match; country codes
// and per-country lengths are not checked (the checksum is). Default: the
// first four and last four letters or digits kept, the others '*', spaces
// kept: "GB82 **** **** **** **54 32".
//
// jwt: "eyJ" not preceded by a base64url character, then base64url segments
// ([A-Za-z0-9_-]) joined by dots: three (header.payload.signature; payload and
// signature may be empty) or five (JWE). The first segment must decode
// (unpadded base64url) to valid JSON starting with '{' that contains "alg".
// A trailing dot after the last segment is not part of the match. Default:
// "<redacted jwt>".
//
// aws_key: (1) access key ids: AKIA, ASIA, AGPA, AIDA, AROA, ANPA, ANVA or
// AIPA followed by 16 upper-case letters or digits, not touching another
// letter or digit. (2) secret access keys, only after a label: an identifier
// whose letters and digits, compared case-insensitively with '_' and '-'
// ignored, end with "secretaccesskey" (aws_secret_access_key,
// AWS_SECRET_ACCESS_KEY, SecretAccessKey, secret_access_key, …), optionally in
// quotes, then optional spaces, '=' or ':', optional spaces and an optional
// quote, then exactly 40 characters of [A-Za-z0-9/+] not followed by another
// of them or '='. Only the secret is replaced, never the label. Default:
// "<redacted aws key>".
//
// private_key: "-----BEGIN <label>-----" where the label is up to 64 of
// [A-Z0-9 ] and contains "PRIVATE KEY" (PRIVATE KEY, RSA/EC/DSA/OPENSSH/
// ENCRYPTED PRIVATE KEY, PGP PRIVATE KEY BLOCK), through the next
// "-----END <same label>-----". Without that END line (a truncated value) the
// match runs on over the characters a PEM body can hold — base64, white
// space, '\' (JSON-escaped newlines) and ":,-" — and stops at the first other
// one, such as a closing quote. Default: "<redacted private key>".
//
// # Overlaps
//
// All enabled detectors run over the whole value; their matches are ordered
// by start, longest first (then by the detector order of Detectors), and a
// match overlapping one already kept is dropped. So each byte is replaced at
// most once, and an email whose local part is a card number is masked as an
// email. Text and Bytes return the number of matches replaced.
//
// # JSON
//
// JSON masks a decoded document (map[string]any, []any, string, float64,
// json.Number, bool, nil). "field" values are JSON pointers (RFC 6901):
// "/data/0/email"; "~1" is '/' and "~0" is '~' in a member name; an array
// index is "0" or digits without a leading zero. As an extension, a segment
// that is exactly "*" matches every element of an array or every member of an
// object ("/users/*/ssn"); a member literally named "*" is only reachable that
// way. A pointer that does not start with '/', or has a '~' not followed by 0
// or 1, is an error (nothing is changed). A path that does not exist, an index
// out of range or "-", and a path through a scalar are not errors: they mask
// nothing. A string target becomes Replace(value, with); any other target
// becomes the string with when with is set, otherwise null (a null target
// without with stays null and is not counted). A value reached by several
// pointers is replaced once. Detector obligations then apply to every string
// value in the document (not to object keys, and not to values a field
// obligation replaced). The count is field replacements plus detector matches.
package mask
