"""Pushes known points with the PyPI `influxdb` client (InfluxDB 1.x API, gzip on, password auth)."""
import sys

from influxdb import InfluxDBClient

port, token = int(sys.argv[1]), sys.argv[2]
client = InfluxDBClient(host="127.0.0.1", port=port, username="agent", password=token,
                        database="clientv1", gzip=True)
assert client.ping(), "ping returned no version"
client.create_database("clientv1")
points = [
    {
        "measurement": "weather",
        "tags": {"city": "Oslo", "station": "s 1"},
        "time": 1_700_000_000_000 + i * 1000,
        "fields": {"temp": i + 0.5, "count": i, "ok": i % 2 == 0, "note": f"n,{i}"},
    }
    for i in range(100)
]
assert client.write_points(points, time_precision="ms", batch_size=30)
print("wrote", len(points))
