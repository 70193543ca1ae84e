"""Sedna-compatible edge AI on device streams.

Workers keep Sedna's names and shapes (``JointInference``, ``BigModelService``, ``IncrementalLearning``,
``Context``, hard-example mining by alias), so a Sedna worker script runs after changing only its imports. Device
data arrives over the wire (MQTT push, the mapper REST API, RTSP frames) through :mod:`edgeai.streams`; this
package imports neither the agent nor the mapper SDK.
"""
