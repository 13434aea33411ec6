"""Other services' APIs on ours: thin adapters from their parameters onto `RenderOptions`."""
