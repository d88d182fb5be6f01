"""Unit tests of producer.py's pure parts: timestamp units, missing readings, sensor names,
and both encodings decoding to what maintcast reads. Run: python -m unittest test_producer
(tests/producer_example.rs runs it in the example's virtual environment)."""

import json
import math
import os
import tempfile
import unittest

import producer
from maintcast.v1 import telemetry_pb2


class Timestamps(unittest.TestCase):
    def test_rfc3339_with_zone_is_epoch_milliseconds(self):
        self.assertEqual(producer.epoch_ms("2026-01-01T00:00:00Z"), 1_767_225_600_000)
        self.assertEqual(producer.epoch_ms("2026-01-01T01:00:00.250+01:00"), 1_767_225_600_250)
        self.assertEqual(producer.epoch_ms("1767225600000"), 1_767_225_600_000)

    def test_seconds_and_zoneless_times_are_refused(self):
        with self.assertRaisesRegex(ValueError, "seconds"):
            producer.epoch_ms("1767225600")
        with self.assertRaisesRegex(ValueError, "zone"):
            producer.epoch_ms("2026-01-01T00:00:00")


class Encodings(unittest.TestCase):
    sensors = {"vibration_rms": 1.5, "oil_temp_c": math.nan}

    def test_protobuf(self):
        raw = producer.telemetry_protobuf("pump-001", 1_767_225_600_000, self.sensors, "pump", None)
        msg = telemetry_pb2.Telemetry.FromString(raw)
        self.assertEqual(msg.machine_id, "pump-001")
        self.assertEqual(msg.ts_ms, 1_767_225_600_000)
        self.assertEqual(msg.sensors["vibration_rms"], 1.5)
        self.assertTrue(math.isnan(msg.sensors["oil_temp_c"]))
        self.assertEqual(msg.machine_type, "pump")
        self.assertFalse(msg.HasField("site"))

    def test_json_sends_a_missing_reading_as_null(self):
        raw = producer.telemetry_json("pump-001", 1_767_225_600_000, self.sensors, None, "lyon")
        doc = json.loads(raw)
        self.assertEqual(doc["ts"], 1_767_225_600_000)
        self.assertIsNone(doc["sensors"]["oil_temp_c"])
        self.assertEqual(doc["site"], "lyon")
        self.assertNotIn("machine_type", doc)
        self.assertNotIn(b"NaN", raw)

    def test_empty_cell_is_nan(self):
        self.assertTrue(math.isnan(producer.sensor_value(" ")))
        self.assertEqual(producer.sensor_value("2.5"), 2.5)


class SensorNames(unittest.TestCase):
    def test_missing_and_unknown_sensors(self):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({"features": ["vibration_rms", "oil_temp_c"]}, f)
        try:
            missing, problems = producer.check_sensors(["VIB", "oil_temp_c"], f.name)
        finally:
            os.unlink(f.name)
        self.assertEqual(missing, ["vibration_rms"])
        self.assertEqual(len(problems), 2)
        self.assertIn("neutral", problems[0])
        self.assertIn("VIB", problems[1])


if __name__ == "__main__":
    unittest.main()
