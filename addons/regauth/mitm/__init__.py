"""mitmproxy adapters: thin addons that carry out the sans-IO core's decisions, in the order
of `addons_list.py`; `patches/` holds every replacement of a private mitmproxy, mitmweb or
hyper-h2 object, with its reason."""
