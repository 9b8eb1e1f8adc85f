"""Store-and-forward: the SQLite buffer, the wire schema, the MQTT uploader and the reference receiver."""
