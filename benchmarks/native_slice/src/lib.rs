//! pitlane's telematics path in Rust, to measure what a native core would buy.
//!
//! One reading, from its Kafka bytes and its car's stored value to the car's new
//! stored value: validate the reading, skip it if the car applied it already,
//! remember it, move the odometer and the daily-mileage estimate, keep the service
//! indicator, levels and fault codes, and encode the state again. The same steps as
//! `decode_event`, `apply` (`_telematics`) and the store's `decode`/`encode`, with the
//! default settings; `compare.py` checks that both give the same state for every
//! reading of the workload before it times them.
//!
//! Two forms of the state, both stored as pitlane's JSON: a JSON tree (`Value`),
//! which is how the Python core holds it (dicts), and a typed record.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

const DAY_S: f64 = 86_400.0;
const DEDUPE_IDS: usize = 32;
const VEHICLE_EVENT_IDS_KEPT: usize = 5;
const MILEAGE_MIN_SPAN_H: f64 = 6.0;
const MILEAGE_SMOOTHING: f64 = 0.3;

/// `entities.event_tag`: 64 bits of BLAKE2b, URL-safe base64 without padding.
fn event_tag(event_id: &str) -> String {
    let digest = blake2b_simd::Params::new().hash_length(8).hash(event_id.as_bytes());
    base64::encode_config(digest.as_bytes(), base64::URL_SAFE_NO_PAD)
}

/// Epoch seconds of an RFC 3339 time, at microseconds as Python's `timestamp()`.
fn epoch_s(text: &str) -> Option<f64> {
    let at = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    let micros = at.timestamp() * 1_000_000 + i64::from(at.timestamp_subsec_micros());
    Some(micros as f64 / 1e6)
}

struct Reading {
    event_id: String,
    at: f64,
    odometer_km: f64,
    remaining_km: Option<f64>,
    remaining_days: Option<f64>,
    oil: Option<f64>,
    soh: Option<f64>,
    fuel: Option<f64>,
    dtc_codes: Option<Vec<String>>,
}

fn text<'a>(event: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    match event.get(name) {
        Some(Value::String(value)) if !value.is_empty() => Ok(value),
        _ => Err(format!("{name}: a non-empty string is required")),
    }
}

fn number(
    event: &Map<String, Value>,
    name: &str,
    low: Option<f64>,
    high: Option<f64>,
) -> Result<Option<f64>, String> {
    match event.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(value)) => {
            let value = value.as_f64().unwrap_or(f64::NAN);
            let outside = low.is_some_and(|l| value < l) || high.is_some_and(|h| value > h);
            if value.is_finite() && !outside {
                Ok(Some(value))
            } else {
                Err(format!("{name}: out of range"))
            }
        }
        _ => Err(format!("{name}: a number is required")),
    }
}

/// The checks of `TelematicsReading` (a rejected reading would go to the dead letters).
fn decode_reading(raw: &[u8]) -> Result<Reading, String> {
    let value: Value = serde_json::from_slice(raw).map_err(|e| format!("invalid JSON: {e}"))?;
    let event = value.as_object().ok_or("expected a JSON object")?;
    if event.get("type").and_then(Value::as_str) != Some("telematics.reading") {
        return Err("not a telematics.reading".into());
    }
    for name in ["customer_id", "anonymous_id"] {
        if !matches!(event.get(name), None | Some(Value::Null | Value::String(_))) {
            return Err(format!("{name}: a string is required"));
        }
    }
    text(event, "vin")?;
    let dtc_codes = match event.get("dtc_codes") {
        None | Some(Value::Null) => None,
        Some(Value::Array(codes)) => Some(
            codes
                .iter()
                .map(|code| code.as_str().map(str::to_owned).ok_or("dtc_codes: strings only"))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        _ => return Err("dtc_codes: a list is required".into()),
    };
    let occurred_at = event.get("occurred_at").and_then(Value::as_str);
    Ok(Reading {
        event_id: text(event, "event_id")?.to_owned(),
        at: occurred_at.and_then(epoch_s).ok_or("occurred_at: an RFC 3339 time is required")?,
        odometer_km: number(event, "odometer_km", Some(0.0), None)?.ok_or("odometer_km: required")?,
        remaining_km: number(event, "service_remaining_km", None, None)?,
        remaining_days: number(event, "service_remaining_days", None, None)?,
        oil: number(event, "oil_life_pct", Some(0.0), Some(100.0))?,
        soh: number(event, "battery_soh_pct", Some(0.0), Some(100.0))?,
        fuel: number(event, "fuel_level_pct", Some(0.0), Some(100.0))?,
        dtc_codes,
    })
}

/// The odometer's part of a car's state, whichever form holds the rest.
struct Odometer {
    odo: Option<f64>,
    odo_at: Option<f64>,
    anchor: Option<(f64, f64)>,
    rate: Option<f64>,
}

impl Odometer {
    /// `apply._odometer`: forward only; false for a reading older than the newest.
    fn advance(&mut self, km: f64, at: f64) -> bool {
        self.odo = Some(self.odo.map_or(km, |odo| odo.max(km)));
        if self.odo_at.is_some_and(|odo_at| at <= odo_at) {
            return false;
        }
        self.odo_at = Some(at);
        match self.anchor {
            Some((anchor_km, anchor_at)) if km >= anchor_km => {
                let span_days = (at - anchor_at) / DAY_S;
                if span_days * 24.0 >= MILEAGE_MIN_SPAN_H {
                    let sample = (km - anchor_km) / span_days;
                    self.rate = Some(self.rate.map_or(sample, |rate| {
                        MILEAGE_SMOOTHING * sample + (1.0 - MILEAGE_SMOOTHING) * rate
                    }));
                    self.anchor = Some((km, at));
                }
            }
            _ => self.anchor = Some((km, at)),
        }
        true
    }
}

/// `apply.newest_event_ids`: unique, in event-time order, the newest few.
fn newest_event_ids(mut ids: Vec<(f64, String)>) -> Vec<(f64, String)> {
    ids.sort_by(|a, b| a.partial_cmp(b).expect("event times are finite"));
    ids.dedup();
    let start = ids.len().saturating_sub(VEHICLE_EVENT_IDS_KEPT);
    ids.split_off(start)
}

fn sorted_codes(codes: &[String]) -> Vec<String> {
    let mut codes = codes.to_vec();
    codes.sort();
    codes.dedup();
    codes
}

/// The stored form is `version|json`, like `redis_store.encode`.
fn split_stored(stored: &[u8]) -> (i64, &[u8]) {
    let bar = stored.iter().position(|&b| b == b'|').expect("a stored value has a version");
    let version = std::str::from_utf8(&stored[..bar]).expect("ascii").parse().expect("a number");
    (version, &stored[bar + 1..])
}

type Item<'a> = (&'a [u8], &'a [u8], &'a str, i64);

fn batch<'p>(
    py: Python<'p>,
    items: Vec<Item<'_>>,
    step: impl Fn(&Reading, &[u8], &str, i64) -> Vec<u8>,
) -> PyResult<&'p PyList> {
    let out = PyList::empty(py);
    for (raw, stored, partition, offset) in items {
        let reading = decode_reading(raw).map_err(pyo3::exceptions::PyValueError::new_err)?;
        let (version, body) = split_stored(stored);
        let mut value = format!("{}|", version + 1).into_bytes();
        value.extend(step(&reading, body, partition, offset));
        out.append(PyBytes::new(py, &value))?;
    }
    Ok(out)
}

// --- the state as a JSON tree, as the Python core holds it ---------------------------

fn tree_apply(car: &mut Map<String, Value>, reading: &Reading, partition: &str, offset: i64) {
    let tag = event_tag(&reading.event_id);
    let seen = car["seen"].as_array().expect("seen is a list");
    let pending = car.get("pend").and_then(Value::as_object);
    if seen.iter().any(|t| t.as_str() == Some(&tag))
        || pending.is_some_and(|p| p.values().any(|tags| tags.get(&tag).is_some()))
    {
        return;
    }
    let seen = car.get_mut("seen").and_then(Value::as_array_mut).expect("seen is a list");
    seen.push(Value::String(tag.clone()));
    let over = seen.len().saturating_sub(DEDUPE_IDS);
    seen.drain(..over);
    let pending = car.entry("pend").or_insert_with(|| json!({}));
    let tags = pending.as_object_mut().expect("pend").entry(partition).or_insert_with(|| json!({}));
    tags.as_object_mut().expect("pend's tags").insert(tag, json!(offset));
    let mut ids: Vec<(f64, String)> = car["eids"]
        .as_array()
        .map(|ids| ids.iter().map(|e| (e[0].as_f64().unwrap(), e[1].as_str().unwrap().into())))
        .into_iter()
        .flatten()
        .collect();
    ids.push((reading.at, reading.event_id.clone()));
    car.insert("eids".into(), json!(newest_event_ids(ids)));
    let anchor = car["anchor"].as_array().map(|a| (a[0].as_f64().unwrap(), a[1].as_f64().unwrap()));
    let mut odometer = Odometer {
        odo: car["odo"].as_f64(),
        odo_at: car["odo_at"].as_f64(),
        anchor,
        rate: car["rate"].as_f64(),
    };
    let newest = odometer.advance(reading.odometer_km, reading.at);
    car.insert("odo".into(), json!(odometer.odo));
    car.insert("odo_at".into(), json!(odometer.odo_at));
    car.insert("anchor".into(), json!(odometer.anchor));
    car.insert("rate".into(), json!(odometer.rate));
    if !newest {
        return;
    }
    if reading.remaining_km.is_some() || reading.remaining_days.is_some() {
        let indicator = json!({"km": reading.remaining_km, "days": reading.remaining_days, "at": reading.at});
        car.insert("ind".into(), indicator);
    }
    for (name, level) in [("oil", reading.oil), ("soh", reading.soh), ("fuel", reading.fuel)] {
        if let Some(level) = level {
            car.insert(name.into(), json!(level));
        }
    }
    if let Some(codes) = &reading.dtc_codes {
        car.insert("dtc".into(), json!(sorted_codes(codes)));
    }
}

/// A batch of `(reading, stored car, partition, offset)`: the cars' new stored values.
#[pyfunction]
fn telematics_tree<'p>(py: Python<'p>, items: Vec<Item<'_>>) -> PyResult<&'p PyList> {
    batch(py, items, |reading, body, partition, offset| {
        let mut car: Map<String, Value> = serde_json::from_slice(body).expect("a stored car");
        tree_apply(&mut car, reading, partition, offset);
        serde_json::to_vec(&car).expect("JSON")
    })
}

// --- the state as a typed record -----------------------------------------------------

#[derive(Serialize, Deserialize)]
struct Indicator {
    km: Option<f64>,
    days: Option<f64>,
    at: f64,
}

/// `profile.new_vehicle`'s fields; those this path does not read stay JSON values.
#[derive(Serialize, Deserialize)]
struct Car {
    kind: String,
    id: String,
    seen: Vec<String>,
    model: Option<String>,
    mv: Value,
    market: Option<String>,
    registered_on: Value,
    plan: Value,
    owner: Option<String>,
    owner_since: Value,
    owners: Value,
    service: Value,
    odo: Option<f64>,
    odo_at: Option<f64>,
    rate: Option<f64>,
    anchor: Option<(f64, f64)>,
    ind: Option<Indicator>,
    oil: Option<f64>,
    soh: Option<f64>,
    fuel: Option<f64>,
    dtc: Vec<String>,
    booking: Value,
    closed: Value,
    eids: Vec<(f64, String)>,
    due_fired: Value,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pend: Option<HashMap<String, HashMap<String, i64>>>,
}

fn typed_apply(car: &mut Car, reading: &Reading, partition: &str, offset: i64) {
    let tag = event_tag(&reading.event_id);
    if car.seen.contains(&tag)
        || car.pend.as_ref().is_some_and(|p| p.values().any(|tags| tags.contains_key(&tag)))
    {
        return;
    }
    car.seen.push(tag.clone());
    let over = car.seen.len().saturating_sub(DEDUPE_IDS);
    car.seen.drain(..over);
    let pending = car.pend.get_or_insert_with(HashMap::new);
    pending.entry(partition.to_owned()).or_default().insert(tag, offset);
    let mut ids = std::mem::take(&mut car.eids);
    ids.push((reading.at, reading.event_id.clone()));
    car.eids = newest_event_ids(ids);
    let mut odometer = Odometer { odo: car.odo, odo_at: car.odo_at, anchor: car.anchor, rate: car.rate };
    let newest = odometer.advance(reading.odometer_km, reading.at);
    (car.odo, car.odo_at, car.anchor, car.rate) =
        (odometer.odo, odometer.odo_at, odometer.anchor, odometer.rate);
    if !newest {
        return;
    }
    if reading.remaining_km.is_some() || reading.remaining_days.is_some() {
        car.ind = Some(Indicator { km: reading.remaining_km, days: reading.remaining_days, at: reading.at });
    }
    car.oil = reading.oil.or(car.oil);
    car.soh = reading.soh.or(car.soh);
    car.fuel = reading.fuel.or(car.fuel);
    if let Some(codes) = &reading.dtc_codes {
        car.dtc = sorted_codes(codes);
    }
}

/// As `telematics_tree`, with the car decoded into a typed record.
#[pyfunction]
fn telematics_typed<'p>(py: Python<'p>, items: Vec<Item<'_>>) -> PyResult<&'p PyList> {
    batch(py, items, |reading, body, partition, offset| {
        let mut car: Car = serde_json::from_slice(body).expect("a stored car");
        typed_apply(&mut car, reading, partition, offset);
        serde_json::to_vec(&car).expect("JSON")
    })
}

#[pymodule]
fn native_slice(_py: Python, module: &PyModule) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(telematics_tree, module)?)?;
    module.add_function(wrap_pyfunction!(telematics_typed, module)?)?;
    Ok(())
}
