//! The floors our numbers are measured against, served by this binary: a bare
//! may_minihttp server answering 200 (the verifier's HTTP stack without any
//! work), and a warp handler answering 200 (the issuer's).

use std::io;
use std::net::SocketAddr;

use may_minihttp::{HttpService, HttpServiceFactory, Request, Response};

struct Bare;

impl HttpService for Bare {
    fn call(&mut self, _req: Request<'_, '_, '_>, _rsp: &mut Response<'_>) -> io::Result<()> {
        Ok(())
    }
}

struct BareFactory;

impl HttpServiceFactory for BareFactory {
    type Service = Bare;
    fn new_service(&self, _id: usize) -> Bare {
        Bare
    }
}

/// Serves 200 with an empty body on `addr` until the process ends, configured
/// like the verifier (one worker).
pub fn serve_bare(addr: SocketAddr, workers: usize) -> io::Result<()> {
    may::config().set_workers(workers).set_stack_size(0x2000);
    let server = BareFactory.start(addr)?;
    eprintln!("bare may_minihttp listening on {addr}");
    let _ = server.join();
    Ok(())
}

/// Serves `{"success":true}` with warp on `addr`, on the issuer's runtime shape.
pub fn serve_warp(addr: SocketAddr) -> io::Result<()> {
    use warp::Filter;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!("bare warp listening on {addr}");
        let route = warp::any().map(|| {
            warp::reply::with_header(r#"{"success":true}"#, "content-type", "application/json")
        });
        warp::serve(route).incoming(listener).run().await;
        Ok(())
    })
}
