//! `kubectl nsdebug`: the kubectl plugin of nsdebug (see the `kubectl_nsdebug` library).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = kubectl_nsdebug::PluginCli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("kubectl-nsdebug: failed to start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(kubectl_nsdebug::run(cli));
    // A read of stdin may still be blocked on its thread; do not wait for it.
    runtime.shutdown_background();
    code
}
