// Loaded before require.js, which takes a global `require` object as its configuration.
// The widget manager loads its fonts from beside the module name it is defined under
// ("@jupyter-widgets/html-manager/dist/..."), which require.js would resolve against the page's
// own folder (lessons/@jupyter-widgets/...): map that name to the copy this site serves.
var require = {
  paths: {
    "@jupyter-widgets/html-manager/dist":
      (document.documentElement.dataset.content_root || "") + "_static/offline/html-manager",
  },
};
