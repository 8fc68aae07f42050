//! The Modbus TCP server the PLC polls (tokio-modbus), on its own thread with a one-thread
//! tokio runtime. Every request is answered from [`super::registers::LineState`] under a lock
//! held for microseconds; bad requests get Modbus exception codes and the connection stays.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio_modbus::server::tcp::Server;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

use super::core::{Inner, LineIo};
use super::registers::Refusal;

/// Where and as whom the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModbusConfig {
    /// Listen address, e.g. `0.0.0.0:502` (port 0: any free port).
    pub listen: SocketAddr,
    /// The unit id the PLC addresses (requests for others get exception 0x0B).
    pub unit: u8,
}

/// Parses `modbus:ADDRESS:PORT` (the CLI's `--trigger`).
pub fn parse_trigger(s: &str) -> Result<SocketAddr, String> {
    let rest = s.strip_prefix("modbus:").ok_or_else(|| {
        format!("--trigger {s:?}: expected modbus:ADDRESS:PORT, e.g. modbus:0.0.0.0:502")
    })?;
    rest.parse().map_err(|_| {
        format!("--trigger {s:?}: {rest:?} is not ADDRESS:PORT, e.g. modbus:0.0.0.0:502")
    })
}

/// The running server. Dropping it stops the server and closes the PLC's connections.
pub struct ModbusServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ModbusServer {
    /// Binds `config.listen` and serves `io`'s registers. A port in use is a clear error.
    pub fn start(io: &LineIo, config: &ModbusConfig) -> Result<Self, String> {
        let std_listener = std::net::TcpListener::bind(config.listen).map_err(|e| {
            format!(
                "Modbus server: cannot listen on {}: {e} (another program on that port? ports \
                 below 1024 need privileges)",
                config.listen
            )
        })?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| format!("Modbus server: {e}"))?;
        let addr = std_listener
            .local_addr()
            .map_err(|e| format!("Modbus server: {e}"))?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let inner = io.inner.clone();
        let unit = config.unit;
        let thread = std::thread::Builder::new()
            .name("modbus-server".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("Modbus server: no runtime: {e}");
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!("Modbus server: {e}");
                            return;
                        }
                    };
                    let server = Server::new(listener);
                    let on_connected = |stream: tokio::net::TcpStream, peer: SocketAddr| {
                        let _ = stream.set_nodelay(true);
                        let service = PlcService::new(inner.clone(), unit, peer);
                        async move { Ok(Some((service, stream))) }
                    };
                    let on_error = |e: std::io::Error| {
                        tracing::info!("Modbus connection closed: {e}");
                    };
                    let abort = async move {
                        let _ = rx.await;
                    };
                    if let Err(e) = server.serve_until(&on_connected, on_error, abort).await {
                        tracing::error!("Modbus server stopped: {e}");
                    }
                });
                // Dropping the runtime ends the connection tasks.
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| format!("Modbus server: {e}"))?;
        Ok(Self {
            addr,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// The address it listens on (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ModbusServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One PLC connection.
struct PlcService {
    inner: Arc<Inner>,
    unit: u8,
    peer: SocketAddr,
    counted: AtomicBool,
}

impl PlcService {
    fn new(inner: Arc<Inner>, unit: u8, peer: SocketAddr) -> Self {
        if let Ok(mut s) = inner.status.lock() {
            s.clients += 1;
        }
        tracing::info!("PLC connected from {peer}");
        Self {
            inner,
            unit,
            peer,
            counted: AtomicBool::new(true),
        }
    }

    fn handle(&self, req: SlaveRequest<'static>) -> Result<Response, ExceptionCode> {
        if let Ok(mut s) = self.inner.status.lock() {
            s.last_poll = Some(Instant::now());
        }
        // Unit 0 is the broadcast/any address many TCP clients send; 255 means "not used".
        if req.slave != self.unit && req.slave != 0 && req.slave != 255 {
            return Err(ExceptionCode::GatewayTargetDevice);
        }
        let refusal = |r: Refusal| match r {
            Refusal::IllegalDataAddress => ExceptionCode::IllegalDataAddress,
            Refusal::IllegalDataValue => ExceptionCode::IllegalDataValue,
        };
        let mut st = self
            .inner
            .state
            .lock()
            .map_err(|_| ExceptionCode::ServerDeviceFailure)?;
        let now = Instant::now();
        let r = match req.request {
            Request::ReadCoils(a, n) => Response::ReadCoils(st.read_coils(a, n).map_err(refusal)?),
            Request::ReadDiscreteInputs(a, n) => {
                Response::ReadDiscreteInputs(st.read_discrete_inputs(a, n).map_err(refusal)?)
            }
            Request::ReadInputRegisters(a, n) => {
                Response::ReadInputRegisters(st.read_input_registers(a, n).map_err(refusal)?)
            }
            Request::ReadHoldingRegisters(a, n) => {
                Response::ReadHoldingRegisters(st.read_holding(a, n).map_err(refusal)?)
            }
            Request::WriteSingleCoil(a, v) => {
                st.write_coils(a, &[v], now).map_err(refusal)?;
                Response::WriteSingleCoil(a, v)
            }
            Request::WriteMultipleCoils(a, v) => {
                st.write_coils(a, &v, now).map_err(refusal)?;
                Response::WriteMultipleCoils(a, v.len() as u16)
            }
            Request::WriteSingleRegister(a, v) => {
                st.write_holding(a, &[v]).map_err(refusal)?;
                Response::WriteSingleRegister(a, v)
            }
            Request::WriteMultipleRegisters(a, v) => {
                st.write_holding(a, &v).map_err(refusal)?;
                Response::WriteMultipleRegisters(a, v.len() as u16)
            }
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        drop(st);
        // A trigger, an ack or an enable may wake the capture thread.
        self.inner_notify();
        Ok(r)
    }

    fn inner_notify(&self) {
        // The condvar lives in `Inner`; LineIo::notify is the public face of the same call.
        LineIo::notify_inner(&self.inner);
    }
}

impl Drop for PlcService {
    fn drop(&mut self) {
        if self.counted.swap(false, Ordering::SeqCst)
            && let Ok(mut s) = self.inner.status.lock()
        {
            s.clients = s.clients.saturating_sub(1);
        }
        tracing::info!("PLC at {} disconnected", self.peer);
    }
}

impl tokio_modbus::server::Service for PlcService {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        std::future::ready(self.handle(req))
    }
}
