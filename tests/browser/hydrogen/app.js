// The whole Hydrogen app as hydrogen-web's own index.html/main.js assemble it: the platform, navigation,
// URL router and RootViewModel (session picker, login, session view with room list, room and composer).
import { FeatureSet, Platform, RootViewModel, createNavigation, createRouter } from "hydrogen-view-sdk";

const assetPaths = {
  downloadSandbox: "assets/download-sandbox.html",
  worker: "assets/main.js",
  olm: { wasm: "olm/olm.wasm", legacyBundle: "olm/olm_legacy.js", wasmBundle: "olm/olm.js" },
  // Hydrogen 0.3 needs its service worker (authenticated media; the session hands it its access token)
  serviceWorker: "sw.js",
};
const config = { defaultHomeServer: new URLSearchParams(location.search).get("hs") ?? "" };

const platform = new Platform({ container: document.body, assetPaths, config, options: { development: false } });
await platform.init();
const navigation = createNavigation();
platform.setNavigation(navigation);
const urlRouter = createRouter({ navigation, history: platform.history });
urlRouter.attach();
const features = await FeatureSet.load(platform.settingsStorage);
const vm = new RootViewModel({ platform, urlRouter, navigation, features });
await vm.load();
platform.createAndMountRootView(vm);
