"""Shipped mappers, one subpackage per protocol (modbus, onvif, dht11), each built on ``mapper_framework``."""
