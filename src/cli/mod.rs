//! The command line: every subcommand of the design.
//! `anyhow` is allowed here and in `main.rs` only.

mod client;
mod daemon;
mod image;
mod logging;
mod run;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::config::{self, NodeletConfiguration};

/// Exit code for bad usage.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "nodelet",
    version,
    about = "A kubelet-style single-node container agent",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// State directory (content store, snapshots, pod state).
    #[arg(long, global = true, value_name = "DIR", env = "NODELET_ROOT")]
    pub root: Option<PathBuf>,
    /// The API socket.
    #[arg(long, global = true, value_name = "PATH", env = "NODELET_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Container log directory (kubelet layout).
    #[arg(long = "log-dir", global = true, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Daemon configuration file (NodeletConfiguration YAML).
    #[arg(long, global = true, value_name = "FILE", env = "NODELET_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log level: error, warn, info, debug, trace (or a tracing filter).
    #[arg(
        short = 'v',
        long = "log-level",
        global = true,
        value_name = "LEVEL",
        default_value = "warn"
    )]
    pub log_level: String,
    /// Log format on stderr.
    #[arg(long = "log-format", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PodOutput {
    Wide,
    Json,
    Yaml,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DataOutput {
    Json,
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run pods in the foreground until they finish or Ctrl-C (graceful stop).
    Run {
        /// Manifest files or directories, or - for stdin.
        #[arg(required = true)]
        files: Vec<String>,
        /// Print the final pods as a v1 List on exit.
        #[arg(short, long, value_enum)]
        output: Option<DataOutput>,
        /// Treat fields that are not supported yet as errors.
        #[arg(long)]
        strict: bool,
    },
    /// Run the node daemon (the systemd service).
    Daemon {
        /// Stop all pods gracefully before the daemon exits.
        #[arg(long)]
        stop_pods_on_exit: bool,
    },
    /// List pods (or other resources).
    #[command(args_conflicts_with_subcommands = true, arg_required_else_help = true)]
    Get {
        /// GET an API path and print the reply as it is (`/metrics`,
        /// `/stats/summary`), as `kubectl get --raw`.
        #[arg(long, value_name = "PATH")]
        raw: Option<String>,
        #[command(subcommand)]
        what: Option<GetWhat>,
    },
    /// Show a pod in detail, with its events.
    Describe {
        #[command(subcommand)]
        what: DescribeWhat,
    },
    /// Print a container's logs.
    Logs {
        pod: String,
        #[arg(short, long)]
        container: Option<String>,
        #[arg(short, long)]
        follow: bool,
        #[arg(short, long)]
        previous: bool,
        #[arg(long)]
        tail: Option<i64>,
        #[arg(long)]
        timestamps: bool,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Run a command in a container.
    Exec {
        pod: String,
        #[arg(short, long)]
        container: Option<String>,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// The command and its arguments (after --).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Create pods from manifests in the running daemon.
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
        #[arg(long)]
        strict: bool,
    },
    /// Delete a pod (graceful).
    Delete {
        #[command(subcommand)]
        what: DeleteWhat,
    },
    /// Manage images.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Print the client's version and the running nodelet's.
    Version,
    /// Print events.
    Events {
        #[arg(short, long)]
        watch: bool,
    },
    /// Check manifests: every error with its field path.
    Validate {
        /// Manifest files or directories, or - for stdin.
        #[arg(required = true)]
        files: Vec<String>,
        /// Print the defaulted pods.
        #[arg(short, long, value_enum)]
        output: Option<DataOutput>,
        /// Treat fields that are not supported yet as errors.
        #[arg(long)]
        strict: bool,
    },
    /// Freeze a pod's (or one container's) processes.
    Pause {
        pod: String,
        #[arg(short, long)]
        container: Option<String>,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Thaw a paused pod or container.
    Unpause {
        pod: String,
        #[arg(short, long)]
        container: Option<String>,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Resource usage.
    Top {
        #[command(subcommand)]
        what: TopWhat,
    },
    /// Daemon configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print a shell completion script.
    Completion { shell: clap_complete::Shell },
    /// Internal: run the container of an OCI bundle in the foreground and
    /// exit with its code (128 when it cannot start). Used by tests and
    /// benchmarks; not part of the stable command line.
    #[command(hide = true, name = "run-container")]
    RunContainer { bundle: PathBuf },
    /// Internal: the per-pod shim, started by the runtime.
    #[command(hide = true)]
    Shim {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        hostname: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum GetWhat {
    /// List pods.
    #[command(alias = "pod", alias = "po")]
    Pods {
        name: Option<String>,
        #[arg(short, long, value_enum)]
        output: Option<PodOutput>,
        /// After the list, print a row for every change.
        #[arg(short, long)]
        watch: bool,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Manifest sources and their errors.
    Sources,
    /// List ConfigMaps (name, data keys, age).
    #[command(alias = "configmap", alias = "cm")]
    Configmaps {
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// List Secrets (name, type, data keys, age; never their values).
    #[command(alias = "secret")]
    Secrets {
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DescribeWhat {
    #[command(alias = "pods", alias = "po")]
    Pod {
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeleteWhat {
    #[command(alias = "pods", alias = "po")]
    Pod {
        name: String,
        #[arg(long = "grace-period")]
        grace_period: Option<i64>,
        /// With --grace-period=0: kill at once.
        #[arg(long)]
        force: bool,
        /// Wait until the pod has stopped.
        #[arg(long)]
        wait: bool,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    #[command(alias = "configmaps", alias = "cm")]
    Configmap {
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    #[command(alias = "secrets")]
    Secret {
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TopWhat {
    /// CPU (millicores) and memory (working set) per pod.
    #[command(alias = "pod", alias = "po")]
    Pods {
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// One row per container.
        #[arg(long)]
        containers: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image from a registry.
    Pull {
        reference: String,
        #[arg(long)]
        platform: Option<String>,
        #[arg(long, value_name = "USER:PASS")]
        creds: Option<String>,
        #[arg(short, long)]
        quiet: bool,
    },
    /// List images.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long, value_enum)]
        output: Option<DataOutput>,
    },
    /// Show an image's manifest, config and snapshots.
    Inspect { reference: String },
    /// Remove an image.
    Rm {
        reference: String,
        #[arg(long)]
        force: bool,
    },
    /// Import an OCI image layout directory or archive.
    Import {
        path: PathBuf,
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove unused blobs and snapshots.
    Prune,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the full default configuration.
    Defaults,
    /// Check a configuration file (default: --config).
    Validate { file: Option<PathBuf> },
}

/// Entry point for `main`: parse, run, map the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.global);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime of the long-running commands (`run`, `daemon`,
/// `image`): two worker threads, like the machines nodelet targets.
fn async_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start async runtime")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if matches!(
        cli.command,
        Command::Get { .. }
            | Command::Describe { .. }
            | Command::Logs { .. }
            | Command::Events { .. }
            | Command::Version
            | Command::Validate { .. }
            | Command::Completion { .. }
            | Command::Config { .. }
    ) {
        crate::sys::default_sigpipe();
    }
    match cli.command {
        Command::Validate {
            files,
            output,
            strict,
        } => validate::run(&files, output, strict),
        Command::Config { command } => config_command(&cli.global, command),
        Command::Completion { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "nodelet", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::RunContainer { bundle } => run_container(&bundle),
        Command::Shim {
            state_dir,
            hostname,
        } => match crate::runtime::native::shim::main(&state_dir, &hostname) {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                eprintln!("error: {e:#}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Run {
            files,
            output,
            strict,
        } => run::run(&cli.global, &files, output, strict),
        Command::Daemon { stop_pods_on_exit } => daemon::run(&cli.global, stop_pods_on_exit),
        Command::Get {
            raw: Some(path), ..
        } => client::get_raw(&cli.global, &path),
        Command::Get { what: None, .. } => {
            eprintln!("error: get needs a resource or --raw PATH");
            Ok(ExitCode::from(EXIT_USAGE))
        }
        Command::Get {
            what:
                Some(GetWhat::Pods {
                    name,
                    output,
                    watch,
                    namespace,
                }),
            ..
        } => {
            if watch {
                client::watch_pods(&cli.global, &namespace, output == Some(PodOutput::Wide))
            } else {
                client::get_pods(&cli.global, name.as_deref(), output, &namespace)
            }
        }
        Command::Get {
            what: Some(GetWhat::Sources),
            ..
        } => client::get_sources(&cli.global),
        Command::Get {
            what: Some(GetWhat::Configmaps { namespace }),
            ..
        } => client::get_objects::<k8s_openapi::api::core::v1::ConfigMap>(&cli.global, &namespace),
        Command::Get {
            what: Some(GetWhat::Secrets { namespace }),
            ..
        } => client::get_objects::<k8s_openapi::api::core::v1::Secret>(&cli.global, &namespace),
        Command::Describe {
            what: DescribeWhat::Pod { name, namespace },
        } => client::describe_pod(&cli.global, &name, &namespace),
        Command::Logs {
            pod,
            container,
            follow,
            previous,
            tail,
            timestamps,
            namespace,
        } => client::logs(
            &cli.global,
            &client::LogArgs {
                pod: &pod,
                follow,
                container: container.as_deref(),
                previous,
                tail,
                timestamps,
                namespace: &namespace,
            },
        ),
        Command::Exec {
            pod,
            container,
            namespace,
            command,
        } => client::exec(
            &cli.global,
            &pod,
            container.as_deref(),
            &namespace,
            &command,
        ),
        Command::Apply { files, strict } => client::apply(&cli.global, &files, strict),
        Command::Delete {
            what:
                DeleteWhat::Pod {
                    name,
                    grace_period,
                    force,
                    wait,
                    namespace,
                },
        } => client::delete_pod(&cli.global, &name, &namespace, grace_period, force, wait),
        Command::Delete {
            what: DeleteWhat::Configmap { name, namespace },
        } => client::delete_object::<k8s_openapi::api::core::v1::ConfigMap>(
            &cli.global,
            &name,
            &namespace,
        ),
        Command::Delete {
            what: DeleteWhat::Secret { name, namespace },
        } => client::delete_object::<k8s_openapi::api::core::v1::Secret>(
            &cli.global,
            &name,
            &namespace,
        ),
        Command::Image { command } => image::run(&cli.global, command),
        Command::Events { watch } => client::events(&cli.global, watch),
        Command::Version => client::version(&cli.global),
        Command::Pause {
            pod,
            container,
            namespace,
        } => client::pause(&cli.global, &pod, container.as_deref(), &namespace, true),
        Command::Unpause {
            pod,
            container,
            namespace,
        } => client::pause(&cli.global, &pod, container.as_deref(), &namespace, false),
        Command::Top {
            what:
                TopWhat::Pods {
                    namespace,
                    all_namespaces,
                    containers,
                },
        } => client::top_pods(
            &cli.global,
            (!all_namespaces).then_some(namespace.as_str()),
            containers,
        ),
    }
}

fn run_container(bundle: &std::path::Path) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let text = std::fs::read_to_string(bundle.join("config.json"))
        .with_context(|| format!("read {}/config.json", bundle.display()))?;
    let spec: oci_spec::runtime::Spec = serde_json::from_str(&text)
        .with_context(|| format!("parse {}/config.json", bundle.display()))?;
    // A cgroupsPath in the bundle is honoured as runc does: created with
    // the spec's limits, removed when the container is done.
    let wanted = crate::runtime::cgroup::of_spec(&spec);
    let cgroup = wanted.as_ref().map(|(p, _)| p.clone());
    let cgroups = match &wanted {
        Some((path, res)) => {
            let cg = crate::runtime::cgroup::detect().context("cgroups")?;
            cg.create(path, res)
                .with_context(|| format!("create cgroup {path}"))?;
            Some(cg)
        }
        None => None,
    };
    let ran = crate::runtime::native::container::run(bundle, &spec, cgroups.as_deref());
    if let (Some(cg), Some(path)) = (&cgroups, &cgroup) {
        cg.remove(path)
            .with_context(|| format!("remove cgroup {path}"))?;
    }
    match ran {
        Ok(exit) => Ok(ExitCode::from(u8::try_from(exit.code).unwrap_or(255))),
        Err(e) => {
            eprintln!("error: {e:#}");
            // containerd records a container that could not start as exit 128 (StartError).
            Ok(ExitCode::from(128))
        }
    }
}

/// The configuration in effect: `--config` if given, else defaults; the
/// global flags override the file.
pub fn effective_config(global: &GlobalArgs) -> anyhow::Result<NodeletConfiguration> {
    let mut cfg = match &global.config {
        Some(p) => NodeletConfiguration::load(p)?,
        None => NodeletConfiguration::default(),
    };
    if let Some(r) = &global.root {
        cfg.root_dir = r.clone();
    }
    if let Some(s) = &global.socket {
        cfg.socket = s.clone();
    }
    if let Some(l) = &global.log_dir {
        cfg.log_dir = l.clone();
    }
    Ok(cfg)
}

fn config_command(global: &GlobalArgs, command: ConfigCommand) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Defaults => {
            print!("{}", NodeletConfiguration::defaults_yaml());
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::Validate { file } => {
            let Some(path) = file.or_else(|| global.config.clone()) else {
                eprintln!("error: no config file given (pass FILE or --config)");
                return Ok(ExitCode::from(EXIT_USAGE));
            };
            match NodeletConfiguration::load(&path) {
                Ok(_) => {
                    println!("{}: valid {}", path.display(), config::KIND);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ config::ConfigError::Read { .. }) => {
                    eprintln!("{e}");
                    Ok(ExitCode::from(2))
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
