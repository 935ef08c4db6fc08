"""The policy: its model and the decisions it makes (`model`), the strict loader that
reports every problem at `file:line:column` (`load`, `load_keys`, `yamlpos`), and repository
patterns matched in linear time (`patterns`, `linear_regex`)."""
