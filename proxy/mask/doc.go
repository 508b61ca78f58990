// Package mask finds sensitive values in text and replaces them: the
// detectors behind `{"detector": …}` mask obligations (email, credit_card,
// ssn, phone, iban, jwt, aws_key, private_key) and the replacement of whole
// values under `{"column": …}` and `{"field": …}` obligations. It is
// protocol-neutral: every engine masks what it returns with it.
//
// A detector replaces only the part of a value that matches. Without a
// `with`, the replacement keeps the value's shape where that is safe
// (`a***@example.com`, `**** **** **** 1111`, `***-**-6789`); with `with`
// every match becomes that literal.
package mask
