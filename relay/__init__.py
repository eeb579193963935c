"""The relay server (store-and-forward over WebSocket); arrives with the relay issue."""
