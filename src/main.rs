//! The `nsdebug` binary: parse flags, then start the runtime and the agent.
//! Synchronous on purpose: nothing may run before the process knows what it is.

use std::process::ExitCode;

use clap::Parser;
use nsdebug::config::{Cli, Command, Config};

fn main() -> ExitCode {
    // The enter helper must stay single-threaded: dispatch it before anything else.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == nsdebug::enter::HELPER_ARG)
    {
        return nsdebug::enter::helper_main();
    }
    let args = match Cli::parse().command {
        Command::Serve(args) => *args,
        Command::LoginLink(args) => return login_link(args),
    };
    let config = match Config::from_args(args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("nsdebug: {}", nsdebug::error_chain(&err));
            return ExitCode::from(2);
        }
    };
    nsdebug::serve::init_logging(&config.log, config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("nsdebug: failed to start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(nsdebug::serve::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("nsdebug: {}", nsdebug::error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

fn login_link(args: nsdebug::config::LoginLinkArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("nsdebug: failed to start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(nsdebug_client::login_link(&args.agent)) {
        Ok(link) => {
            println!("{}", link.url);
            eprintln!(
                "nsdebug: one-time login link for {}, valid for {}s",
                link.user, link.expires_in_seconds
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("nsdebug: {}", nsdebug::error_chain(&err));
            ExitCode::FAILURE
        }
    }
}
