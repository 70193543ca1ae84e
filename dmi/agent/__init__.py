"""The edge agent: the DMI ``DeviceManagerService`` that edgecore normally provides."""
