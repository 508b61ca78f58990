package config

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// decode fills out from YAML, rejecting unknown keys and missing required
// fields with the key's path, and expanding ${VAR} in every string.
func decode(data []byte, out any, lookup func(string) (string, bool)) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return fmt.Errorf("invalid YAML: %w", err)
	}
	d := decoder{lookup: lookup}
	v := reflect.ValueOf(out).Elem()
	if len(root.Content) == 0 {
		return d.required(v, "")
	}
	return d.value(root.Content[0], v, "")
}

type decoder struct {
	lookup func(string) (string, bool)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (d decoder) value(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	name := path
	if name == "" {
		name = "the document"
	}
	switch v.Kind() {
	case reflect.Pointer:
		if n.Tag == "!!null" {
			return nil
		}
		v.Set(reflect.New(v.Type().Elem()))
		return d.value(n, v.Elem(), path)
	case reflect.Struct:
		return d.structure(n, v, path, name)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return fmt.Errorf("%s: expected a list", name)
		}
		v.Set(reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content)))
		for i, item := range n.Content {
			if err := d.value(item, v.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		return d.mapping(n, v, path, name)
	case reflect.Interface:
		x, err := d.free(n, path, name)
		if err != nil {
			return err
		}
		if x != nil {
			v.Set(reflect.ValueOf(x))
		}
		return nil
	default:
		return d.scalar(n, v, name)
	}
}

func (d decoder) structure(n *yaml.Node, v reflect.Value, path, name string) error {
	if n.Tag == "!!null" {
		return d.required(v, path)
	}
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("%s: expected a mapping", name)
	}
	fields := map[string]int{}
	for i := 0; i < v.NumField(); i++ {
		if tag := v.Type().Field(i).Tag.Get("yaml"); tag != "" {
			fields[tag] = i
		}
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key := n.Content[i].Value
		idx, ok := fields[key]
		if !ok {
			return fmt.Errorf("%s: unknown key (line %d)", join(path, key), n.Content[i].Line)
		}
		if seen[key] {
			return fmt.Errorf("%s: duplicate key (line %d)", join(path, key), n.Content[i].Line)
		}
		seen[key] = true
		if err := d.value(n.Content[i+1], v.Field(idx), join(path, key)); err != nil {
			return err
		}
	}
	return d.required(v, path)
}

// required reports the first required field of v that is empty.
func (d decoder) required(v reflect.Value, path string) error {
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		if f.Tag.Get("required") != "true" {
			continue
		}
		fv := v.Field(i)
		key := join(path, f.Tag.Get("yaml"))
		if fv.IsZero() {
			return fmt.Errorf("%s: required field is missing", key)
		}
		if fv.Kind() == reflect.Struct {
			if err := d.required(fv, key); err != nil {
				return err
			}
		}
	}
	return nil
}

func (d decoder) mapping(n *yaml.Node, v reflect.Value, path, name string) error {
	if n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("%s: expected a mapping", name)
	}
	v.Set(reflect.MakeMap(v.Type()))
	for i := 0; i+1 < len(n.Content); i += 2 {
		key := n.Content[i].Value
		ev := reflect.New(v.Type().Elem()).Elem()
		if err := d.value(n.Content[i+1], ev, join(path, key)); err != nil {
			return err
		}
		v.SetMapIndex(reflect.ValueOf(key), ev)
	}
	return nil
}

// free decodes a free-form value (such as policy.opa, passed to OPA as-is):
// mappings with string keys, lists and scalars, expanding ${VAR} in strings.
func (d decoder) free(n *yaml.Node, path, name string) (any, error) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			v, err := d.free(n.Content[i+1], join(path, key), join(path, key))
			if err != nil {
				return nil, err
			}
			m[key] = v
		}
		return m, nil
	case yaml.SequenceNode:
		list := make([]any, 0, len(n.Content))
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			v, err := d.free(item, p, p)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
		return list, nil
	case yaml.ScalarNode:
		if n.Tag == "!!str" || n.Style != 0 {
			s, err := expand(n.Value, d.lookup)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			return s, nil
		}
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return v, nil
	}
	return nil, fmt.Errorf("%s: unsupported YAML node", name)
}

func (d decoder) scalar(n *yaml.Node, v reflect.Value, name string) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("%s: expected a single value", name)
	}
	s, err := expand(n.Value, d.lookup)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if v.Type() == reflect.TypeOf(time.Duration(0)) {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return fmt.Errorf("%s: %q is not a duration such as 60s or 15m", name, s)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Int:
		i, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("%s: %q is not an integer", name, s)
		}
		v.SetInt(int64(i))
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%s: %q is not true or false", name, s)
		}
		v.SetBool(b)
	default:
		return fmt.Errorf("%s: unsupported value type %s", name, v.Type())
	}
	return nil
}

// expand replaces ${VAR} with the variable's value; $$ stands for $. An unset
// variable is an error (an empty one is not).
func expand(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' {
			b.WriteByte(s[i])
			continue
		}
		switch {
		case strings.HasPrefix(s[i:], "$$"):
			b.WriteByte('$')
			i++
		case strings.HasPrefix(s[i:], "${"):
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return "", errors.New("unterminated ${ in value")
			}
			name := s[i+2 : i+end]
			val, ok := lookup(name)
			if !ok {
				return "", fmt.Errorf("environment variable %s is not set", name)
			}
			b.WriteString(val)
			i += end
		default:
			b.WriteByte('$')
		}
	}
	return b.String(), nil
}
