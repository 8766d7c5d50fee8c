// The widget manager (@jupyter-widgets/html-manager) typesets math in widget labels
// with the MathJax 2 call MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]).
// The book loads MathJax 3, which has no Hub; forward the call to its typesetPromise.
document.addEventListener("DOMContentLoaded", function () {
  var mj = window.MathJax;
  if (!mj || mj.Hub || !mj.startup) return;
  mj.Hub = {
    Queue: function (job) {
      var element = job && job[2];
      mj.startup.promise.then(function () {
        return mj.typesetPromise(element ? [element] : undefined);
      });
    },
  };
});
