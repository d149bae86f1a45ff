"""orjson: dumps and loads of a nested document, 2,000 round trips."""
import datetime

import orjson

doc = {
    "id": 1234, "name": "widget", "price": 9.75, "tags": ["a", "b", "c"], "active": True,
    "dims": {"w": 3, "h": 4.5, "unit": "cm"}, "made": datetime.datetime(2024, 5, 1, 12, 30),
    "parts": [{"n": i, "label": "part-%d" % i} for i in range(10)], "note": None,
}
total = 0
for i in range(2000):
    doc["id"] = i
    data = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    back = orjson.loads(data)
    assert back["id"] == i and back["parts"][9]["label"] == "part-9"
    total += len(data)
print("orjson", total)
