"""Northbound sync: the native feed's topics and messages, and the MQTT uplink that carries them."""
