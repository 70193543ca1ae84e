"""CustomResourceDefinitions (devices.kubeedge.io/v1beta1) and sample CRs, shipped as package data."""
