// /api/docs: Swagger UI on the document at /api/schema. The document's URL comes from the
// page's markup, so the page needs no inline script.
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.schemaUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    // "Try it out" sends real requests with the token typed under "Authorize"; the token
    // is kept in the page only, never in the browser's storage.
    persistAuthorization: false,
  });
});
