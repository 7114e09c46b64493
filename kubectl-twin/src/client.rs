//! Which cluster and namespace: kubectl's `--context` and `--namespace`, `KUBECONFIG`, and the
//! namespace of the kubeconfig context when none is given.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use kube::{
    Api, Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};
use serde::de::DeserializeOwned;

/// Cluster and namespace flags, as kubectl has them.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Namespace (default: the kubeconfig context's, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Every namespace (query and summary).
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Path of the kubeconfig file (default: `KUBECONFIG`, else ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<std::path::PathBuf>,
}

/// A client, the namespace it works in, and how to print.
#[derive(Clone)]
pub struct Connected {
    /// The Kubernetes client.
    pub client: Client,
    /// The namespace named or configured.
    pub namespace: String,
    /// Every namespace (`-A`).
    pub all_namespaces: bool,
    /// Stdout is a terminal: progress bars and redraws; otherwise plain lines.
    pub interactive: bool,
}

impl Target {
    /// Reads the kubeconfig and connects.
    pub async fn connect(&self) -> anyhow::Result<Connected> {
        let options = KubeConfigOptions { context: self.context.clone(), ..Default::default() };
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
                Config::from_custom_kubeconfig(kubeconfig, &options).await
            }
            None => Config::from_kubeconfig(&options).await,
        }
        .context("reading the kubeconfig (KUBECONFIG, ~/.kube/config or --kubeconfig)")?;
        let namespace = self.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).context("creating the Kubernetes client")?;
        Ok(Connected {
            client,
            namespace,
            all_namespaces: self.all_namespaces,
            interactive: std::io::stdout().is_terminal(),
        })
    }
}

impl Connected {
    /// The API of kind `K` in the namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The API of kind `K` in the namespace, or in every namespace with `-A`.
    pub fn api_for_listing<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        if self.all_namespaces { Api::all(self.client.clone()) } else { self.api() }
    }
}

/// Every object of `api`, read in pages of 500.
pub async fn list_all<K>(api: &Api<K>) -> anyhow::Result<Vec<K>>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut items = Vec::new();
    let mut params = kube::api::ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await.context("listing")?;
        items.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(items),
        }
    }
}
