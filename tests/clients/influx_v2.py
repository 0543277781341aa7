"""Pushes known points with the PyPI `influxdb-client` (InfluxDB 2.x API, token auth)."""
import sys

from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

port, token = int(sys.argv[1]), sys.argv[2]
with InfluxDBClient(url=f"http://127.0.0.1:{port}", token=token, org="acme") as client:
    assert client.ping(), "ping failed"
    write = client.write_api(write_options=SYNCHRONOUS)
    records = [
        Point("sensor").tag("room", f"r{i % 3}").field("temp", float(i)).field("n", i)
        .time(1_700_000_000 + i, WritePrecision.S)
        for i in range(50)
    ]
    write.write(bucket="clientv2", record=records, write_precision=WritePrecision.S)
print("wrote", len(records))
