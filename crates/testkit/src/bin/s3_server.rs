//! `lifeboat-s3-server ROOT [PORT]`: an S3 server on 127.0.0.1 for benchmarks and manual
//! tries. Credentials come from $S3_ACCESS_KEY and $S3_SECRET_KEY (default `lifeboat` /
//! `lifeboat-secret`); with $S3_REQUEST_LOG set, every request is appended to that file as
//! `UNIX-MILLIS METHOD PATH?QUERY`; with $S3_LINK_MBIT set, it serves as through a link of
//! that many megabits per second each way, with $S3_LINK_MS milliseconds (default 0) before
//! each request. Prints its endpoint, then serves until killed.

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(root) = args.next() else {
        eprintln!("usage: lifeboat-s3-server ROOT [PORT]");
        std::process::exit(2);
    };
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let access = std::env::var("S3_ACCESS_KEY").unwrap_or_else(|_| "lifeboat".into());
    let secret = std::env::var("S3_SECRET_KEY").unwrap_or_else(|_| "lifeboat-secret".into());
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let number = |name: &str| -> Option<u64> {
        let value = std::env::var(name).ok()?;
        match value.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                eprintln!("error: ${name} is `{value}`, not a whole number");
                std::process::exit(2);
            }
        }
    };
    let link = number("S3_LINK_MBIT")
        .map(|mbit| lifeboat_testkit::LinkOptions::mbit(mbit, number("S3_LINK_MS").unwrap_or(0)));
    let server = match lifeboat_testkit::S3Server::serve(
        std::path::Path::new(&root),
        addr,
        &access,
        &secret,
        lifeboat_testkit::ServeOptions {
            log: std::env::var_os("S3_REQUEST_LOG").map(Into::into),
            link,
            ..Default::default()
        },
    ) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("error: cannot serve `{root}` on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("{}", server.endpoint);
    loop {
        std::thread::park();
    }
}
