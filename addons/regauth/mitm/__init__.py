"""mitmproxy adapters: thin addons that hand flows to the sans-IO core in `regauth`."""
