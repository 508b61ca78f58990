// Package config reads regate's YAML configuration file: strict (an unknown key
// or a missing required field is an error naming the key's path, such as
// `targets[0].credentials.user`), with ${VAR} expanded from the environment in
// every string value.
package config
