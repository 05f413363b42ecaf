"""Pod network (CNI), service proxy (nftables) and cluster DNS. Not built yet."""
