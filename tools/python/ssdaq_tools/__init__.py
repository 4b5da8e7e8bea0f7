"""ssdaq-tools: the Python side of ssdaq (CHEC-S slow-signal DAQ).

listener -- subscribe to ssdaqd and receive decoded events (numpy + pyzmq)
reader   -- open the HDF5 files ssdaq-write / ssdaq-replay --hdf5 write
geometry -- where modules and pixels sit on the camera (camera_geometry.json)
plot     -- camera images (`ssdaq-plot`)
"""

__version__ = "0.2.0"
