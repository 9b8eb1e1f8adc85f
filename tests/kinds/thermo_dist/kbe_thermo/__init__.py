"""A serial sensor shipped in its own distribution: the worked example of docs/adding-a-kind.md."""
