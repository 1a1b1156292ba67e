"""What crosses between the kernel and a worker: the payload (values by content key, sent
once), the typed contract both sides import (the cell's spec, the result's metadata, the RPC
names), and the states that travel with a cell (random generators, class keywords)."""
