//! The MQTT half of `inspector bench-io`: results through the station's own path (line I/O
//! sink → history → outbox), sustained and after an outage, counted by a subscriber.

use super::*;

/// A verdict as the pipeline would report it, for the MQTT part (no engine in the loop):
/// every 20th a FAIL (archived with its small frame, as a reject is).
fn bench_verdict(seq: u64, image: &Arc<DecodedImage>, model: &ModelInfo) -> Verdict {
    let fail = seq.is_multiple_of(20);
    let class_idx = model
        .classes
        .iter()
        .position(|c| model.pass_classes.contains(c) != fail)
        .unwrap_or(0);
    let n = model.classes.len().max(1);
    let mut probabilities = vec![0.0; n];
    probabilities[class_idx.min(n - 1)] = 0.9;
    Verdict {
        seq,
        origin: format!("bench frame {seq}"),
        source: "synthetic".into(),
        timestamp: chrono::Utc::now(),
        decision: if fail {
            kernels::Decision::Fail
        } else {
            kernels::Decision::Pass
        },
        class: model.classes.get(class_idx).cloned().unwrap_or_default(),
        confidence: 0.9,
        score: if fail { 0.9 } else { 0.1 },
        threshold: model.threshold,
        pass_threshold: None,
        latency_ms: 0.0,
        engine_ms: 0.0,
        probabilities,
        heatmap: kernels::Heatmap {
            width: 1,
            height: 1,
            class_index: class_idx,
            values: vec![0.5],
        },
        roi: kernels::Roi {
            x: 0,
            y: 0,
            width: image.width,
            height: image.height,
        },
        model_id: model.id.clone(),
        model_hash: model.hash.clone(),
        image: image.clone(),
        display: None,
    }
}

fn with_credentials(mut c: MqttConfig) -> MqttConfig {
    c.username = std::env::var("DI_MQTT_USER").ok();
    c.password = std::env::var("DI_MQTT_PASSWORD").ok();
    c
}

pub(super) fn mqtt_part(
    args: &BenchIoArgs,
    model_path: &Path,
    config: MqttConfig,
) -> anyhow::Result<MqttReport> {
    let m = args.mqtt_results.max(1);
    let (_, info) = pipeline::load_model(model_path).map_err(anyhow::Error::msg)?;
    let dir = BenchDir::new()?;
    let image = Arc::new(DecodedImage {
        data: (0..32 * 32).map(|i| (i % 251) as u8).collect(),
        width: 32,
        height: 32,
        format: kernels::PixelFormat::Gray8,
    });
    let broker = format!(
        "{}://{}:{}/{}",
        if config.tls { "mqtts" } else { "mqtt" },
        config.host,
        config.port,
        config.prefix
    );
    let sustained_cfg = with_credentials(MqttConfig {
        station: format!("{STATION}-sustained"),
        ..config.clone()
    });
    let catch_up_cfg = with_credentials(MqttConfig {
        station: format!("{STATION}-catch-up"),
        ..config.clone()
    });
    let filter = if config.prefix.is_empty() {
        "#".to_string()
    } else {
        format!("{}/#", config.prefix)
    };
    let sub = Subscriber::start(&with_credentials(config.clone()), &filter)?;
    // Allow 1 ms per result beyond a minute before calling the broker stuck.
    let patience = Duration::from_secs(60) + Duration::from_millis(m);

    // Sustained: the publisher runs while the station records.
    let db = dir.0.join("sustained.sqlite");
    let recorder = Recorder::start(&db, RecorderOptions::default())?;
    let sink = RecorderSink::new(recorder.clone(), &sustained_cfg.station, 0.0);
    let (line, mut sink) = LineStation::start(
        &LineOptions {
            modbus: None,
            triggered: false,
            window: Duration::from_secs(5),
            mqtt: Some(sustained_cfg.clone()),
        },
        Some(sink),
        &info,
        "synthetic",
    )
    .map_err(anyhow::Error::msg)?;
    let publisher = line.mqtt.as_ref().context("no MQTT publisher")?;
    if !wait_until(Duration::from_secs(10), || publisher.status().connected) {
        anyhow::bail!(
            "MQTT: not connected to {broker} within 10 s: {}",
            publisher.status().error.unwrap_or_default()
        );
    }
    if !args.json {
        eprintln!("MQTT: sustained, {m} results…");
    }
    let t0 = Instant::now();
    for k in 1..=m {
        sink.record(&bench_verdict(k, &image, &info))
            .map_err(anyhow::Error::msg)?;
    }
    let recorded_s = t0.elapsed().as_secs_f64();
    let acked = wait_until(patience, || publisher.status().acked >= m);
    let seconds = t0.elapsed().as_secs_f64();
    let got_all = acked;
    let status = publisher.status();
    let left = line.finish(Duration::from_secs(5), || recorder.finish());
    anyhow::ensure!(
        got_all,
        "MQTT sustained: {} of {m} acknowledged within {} s ({})",
        status.acked,
        patience.as_secs(),
        left.unwrap_or_default()
    );
    let topic = sustained_cfg.topic("result");
    sub.wait_for(&topic, m, Duration::from_secs(10));
    let (received_distinct, received_total) = sub.count(&topic);
    let sustained = MqttRun {
        results: m,
        seconds,
        msgs_per_s: m as f64 / seconds,
        other_s: recorded_s,
        received_distinct,
        received_total,
    };

    // Catch-up: recorded while no publisher runs (the outbox fills), then the publisher starts.
    let db = dir.0.join("catch-up.sqlite");
    let recorder = Recorder::start(&db, RecorderOptions::default())?;
    let store = HistoryResults::new(
        RecorderSink::new(recorder.clone(), &catch_up_cfg.station, 0.0),
        true,
        &info,
        "synthetic",
    );
    let io = LineIo::new(
        &LineConfig {
            triggered: false,
            window: Duration::from_secs(5),
            first_id: 1,
        },
        Some(Box::new(store)),
    );
    let mut sink = io.sink();
    if !args.json {
        eprintln!("MQTT: catch-up, {m} results recorded during the outage…");
    }
    for k in 1..=m {
        sink.record(&bench_verdict(k, &image, &info))
            .map_err(anyhow::Error::msg)?;
    }
    io.stop();
    io.close_store();
    recorder.finish();
    let waiting = Store::open(&db)?.outbox_left()?;
    anyhow::ensure!(
        waiting == m,
        "MQTT catch-up: {waiting} results in the outbox, expected {m}"
    );
    let t0 = Instant::now();
    let publisher = MqttPublisher::start(catch_up_cfg.clone(), &db).map_err(anyhow::Error::msg)?;
    if !wait_until(Duration::from_secs(10), || publisher.status().connected) {
        anyhow::bail!(
            "MQTT: not connected to {broker} within 10 s: {}",
            publisher.status().error.unwrap_or_default()
        );
    }
    let connect_s = t0.elapsed().as_secs_f64();
    let acked = wait_until(patience, || publisher.status().acked >= m);
    let seconds = t0.elapsed().as_secs_f64();
    let status = publisher.status();
    let left = publisher.finish(Duration::from_secs(5));
    anyhow::ensure!(
        acked,
        "MQTT catch-up: {} of {m} acknowledged within {} s ({left} left)",
        status.acked,
        patience.as_secs()
    );
    let topic = catch_up_cfg.topic("result");
    sub.wait_for(&topic, m, Duration::from_secs(10));
    let (received_distinct, received_total) = sub.count(&topic);
    let catch_up = MqttRun {
        results: m,
        seconds,
        msgs_per_s: m as f64 / seconds,
        other_s: connect_s,
        received_distinct,
        received_total,
    };
    sub.stop();
    anyhow::ensure!(
        sustained.received_distinct == m && catch_up.received_distinct == m,
        "MQTT: the subscriber received {} and {} distinct results, expected {m} each",
        sustained.received_distinct,
        catch_up.received_distinct
    );
    Ok(MqttReport {
        broker,
        sustained,
        catch_up,
    })
}

/// Per topic: messages received, and the distinct inspection ids among them.
type Received = HashMap<String, (u64, BTreeSet<i64>)>;

/// A subscriber counting result messages per topic.
struct Subscriber {
    got: Arc<Mutex<Received>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    fn start(config: &MqttConfig, filter: &str) -> anyhow::Result<Self> {
        let got: Arc<Mutex<Received>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let subscribed = Arc::new(AtomicBool::new(false));
        let mut o = rumqttc::MqttOptions::new(
            format!("inspector-bench-io-sub-{}", std::process::id()),
            config.host.clone(),
            config.port,
        );
        o.set_keep_alive(Duration::from_secs(5));
        o.set_clean_session(true);
        if let Some(u) = &config.username {
            o.set_credentials(u.clone(), config.password.clone().unwrap_or_default());
        }
        if config.tls {
            o.set_transport(rumqttc::Transport::tls_with_default_config());
        }
        let (client, mut conn) = rumqttc::Client::new(o, 1000);
        client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .map_err(|e| anyhow::anyhow!("MQTT subscriber: {e}"))?;
        let (g, s, sub) = (got.clone(), stop.clone(), subscribed.clone());
        let topics = filter.to_string();
        let thread = std::thread::Builder::new()
            .name("bench-io-subscriber".into())
            .spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    match conn.recv_timeout(Duration::from_millis(100)) {
                        Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) => {
                            let id = serde_json::from_slice::<serde_json::Value>(&p.payload)
                                .ok()
                                .and_then(|v| v.get("inspection_id")?.as_i64());
                            if let (Some(id), Ok(mut g)) = (id, g.lock()) {
                                let e = g.entry(p.topic.clone()).or_default();
                                e.0 += 1;
                                e.1.insert(id);
                            }
                        }
                        Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))) => {
                            sub.store(true, Ordering::SeqCst);
                        }
                        Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))))
                            if sub.load(Ordering::SeqCst) =>
                        {
                            // Reconnected with a clean session: subscribe again.
                            let _ = client.try_subscribe(topics.clone(), rumqttc::QoS::AtLeastOnce);
                        }
                        Ok(Err(_)) => std::thread::sleep(Duration::from_millis(50)),
                        _ => {}
                    }
                }
                let _ = client.try_disconnect();
            })?;
        let me = Self {
            got,
            stop,
            thread: Some(thread),
        };
        if !wait_until(Duration::from_secs(10), || {
            subscribed.load(Ordering::SeqCst)
        }) {
            anyhow::bail!(
                "MQTT subscriber: no subscription to {filter} on {}:{} within 10 s (is the \
                 broker running?)",
                config.host,
                config.port
            );
        }
        Ok(me)
    }

    /// (distinct inspection ids, messages) on `topic`.
    fn count(&self, topic: &str) -> (u64, u64) {
        self.got
            .lock()
            .ok()
            .and_then(|g| g.get(topic).map(|(n, ids)| (ids.len() as u64, *n)))
            .unwrap_or((0, 0))
    }

    fn wait_for(&self, topic: &str, distinct: u64, within: Duration) -> bool {
        wait_until(within, || self.count(topic).0 >= distinct)
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
