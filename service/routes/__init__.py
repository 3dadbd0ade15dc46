"""HTTP routes: thin handlers over ``service.dataplane.DataPlane``."""
